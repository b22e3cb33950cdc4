"""The penalty ops: repetition / frequency / presence penalties and the per-row token counts they read.

Backend contracts (``reference``, ``native``, ``pydecode.triton_kernels.penalties``):
``apply_penalties_(logits, token_counts, prompt_mask, repetition, frequency, presence) -> logits`` (in place,
float32) and ``record_tokens_(token_counts, tokens) -> token_counts`` (in place). :func:`prompt_token_mask` builds
the prompt mask the repetition penalty reads.
"""
from __future__ import annotations

import torch

from ..backends import register_op, resolve
from ..validation import check_parameter, check_tokens
from .reference import prompt_token_mask

__all__ = ["apply_penalties_", "penalties_unchecked", "prompt_token_mask", "record_tokens_", "record_tokens_unchecked"]

register_op("apply_penalties_", __name__, "penalties")
register_op("record_tokens_", __name__, "penalties")


def apply_penalties_(logits: torch.Tensor, token_counts: torch.Tensor, prompt_mask: torch.Tensor | None,
                     repetition=1.0, frequency=0.0, presence=0.0, *, backend: str | None = None) -> torch.Tensor:
    """Apply the penalties to float32 ``logits`` (B, V) in place and return it.

    ``token_counts`` (B, V) int32 counts generated tokens; ``prompt_mask`` (B, V) bool marks prompt tokens (repetition
    penalty only). ``repetition`` > 0 (1 = off, transformers semantics); ``frequency`` and ``presence`` in [-2, 2]
    (0 = off, OpenAI semantics). Each is a scalar or a (B,) tensor.
    """
    if logits.dtype != torch.float32 or logits.dim() != 2 or not logits.is_contiguous():
        raise TypeError("logits must be a contiguous float32 tensor of shape (batch, vocab)")
    if token_counts.shape != logits.shape or token_counts.dtype != torch.int32:
        raise TypeError(f"token_counts must be int32 of shape {tuple(logits.shape)}")
    if prompt_mask is not None and (prompt_mask.shape != logits.shape or prompt_mask.dtype != torch.bool):
        raise TypeError(f"prompt_mask must be bool of shape {tuple(logits.shape)}")
    batch = logits.shape[0]
    repetition = check_parameter("repetition_penalty", repetition, batch)
    frequency = check_parameter("frequency_penalty", frequency, batch)
    presence = check_parameter("presence_penalty", presence, batch)
    return penalties_unchecked(logits, token_counts, prompt_mask, repetition, frequency, presence, backend)


def penalties_unchecked(logits, token_counts, prompt_mask, repetition, frequency, presence, backend=None):
    """:func:`apply_penalties_` without argument checks, for the decode loop."""
    _, fn = resolve("apply_penalties_", logits.device, backend)
    return fn(logits, token_counts, prompt_mask, repetition, frequency, presence)


def record_tokens_(token_counts: torch.Tensor, tokens: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
    """``token_counts[b, tokens[b]] += 1`` for every row, in place (tokens must lie in [0, V))."""
    if not isinstance(token_counts, torch.Tensor) or token_counts.dtype != torch.int32 or token_counts.dim() != 2 \
            or not token_counts.is_contiguous():
        raise TypeError("token_counts must be a contiguous int32 tensor of shape (batch, vocab)")
    check_tokens(tokens, *token_counts.shape)
    return record_tokens_unchecked(token_counts, tokens, backend)


def record_tokens_unchecked(token_counts, tokens, backend=None):
    """:func:`record_tokens_` without argument checks, for the decode loop."""
    _, fn = resolve("record_tokens_", token_counts.device, backend)
    return fn(token_counts, tokens)
