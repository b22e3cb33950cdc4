"""The penalty ops' cpp / cuda backend: adapters to ``torch.ops.pydecode.apply_penalties_`` /
``record_tokens_`` and their fake implementations for ``torch.compile``."""
from __future__ import annotations

import torch

from ..extension import native_ops, scalar_pair


def apply_penalties_(logits, token_counts, prompt_mask, repetition=1.0, frequency=0.0, presence=0.0):
    """Repetition / frequency / presence penalties in place on float32 ``logits``; returns ``logits``."""
    native_ops.apply_penalties_(logits, token_counts, prompt_mask, *scalar_pair(repetition, float),
                                *scalar_pair(frequency, float), *scalar_pair(presence, float))
    return logits


def record_tokens_(token_counts, tokens):
    """``token_counts[b, tokens[b]] += 1`` in place; returns ``token_counts``."""
    native_ops.record_tokens_(token_counts, tokens)
    return token_counts


@torch.library.register_fake("pydecode::apply_penalties_")
def _penalties_fake(logits, token_counts, prompt_mask, repetition, repetition_val, frequency, frequency_val,
                    presence, presence_val):
    return None


@torch.library.register_fake("pydecode::record_tokens_")
def _record_fake(token_counts, tokens):
    return None
