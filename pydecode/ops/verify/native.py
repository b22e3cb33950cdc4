"""Adapter from the ``verify`` backend contract to ``torch.ops.pydecode.verify`` (the cpp and cuda backends; torch
dispatches on the tensors' device), and its fake implementation for ``torch.compile``."""
from __future__ import annotations

import torch

import pydecode._C  # noqa: F401  (registers torch.ops.pydecode.*)

_op = torch.ops.pydecode.verify  # fails at import (backend unavailable) in an extension without it


def verify(draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds, step):
    """``(accepted (B,) int64, next_tokens (B,) int64)``; ``temperature`` a float or a (B,) tensor."""
    tensor, value = (temperature, 0.0) if isinstance(temperature, torch.Tensor) else (None, float(temperature))
    return _op(draft_tokens, draft_logits, target_logits, num_draft, tensor, value, seeds, int(step))


@torch.library.register_fake("pydecode::verify")
def _verify_fake(draft_tokens, draft_logits, target_logits, num_draft, temperature, temperature_val, seeds, step):
    batch = draft_tokens.shape[0]
    return num_draft.new_empty(batch), num_draft.new_empty(batch)
