"""Adapter from the ``degeneration_score`` backend contract to ``torch.ops.pydecode.degeneration_score`` (the cpp and
cuda backends; torch dispatches on the tensors' device), and its fake implementation for ``torch.compile``."""
from __future__ import annotations

import torch

import pydecode._C  # noqa: F401  (registers torch.ops.pydecode.*)

_op = torch.ops.pydecode.degeneration_score  # fails at import (backend unavailable) in an extension without it


def degeneration_score(candidates, context, context_mask, probs, alpha, normalize_context=True):
    """``(best (B,) int64, scores (B, K) float32)``; ``alpha`` a float or a (B,) tensor."""
    tensor, value = (alpha, 0.0) if isinstance(alpha, torch.Tensor) else (None, float(alpha))
    best, scores = _op(candidates, context, context_mask, probs, tensor, value, bool(normalize_context))
    return best, scores


@torch.library.register_fake("pydecode::degeneration_score")
def _degeneration_score_fake(candidates, context, context_mask, probs, alpha, alpha_val, normalize_context):
    batch, k, _ = candidates.shape
    return probs.new_empty(batch, dtype=torch.int64), probs.new_empty(batch, k, dtype=torch.float32)
