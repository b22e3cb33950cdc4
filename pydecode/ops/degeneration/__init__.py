"""The degeneration-scoring op of contrastive search: cosine penalty over the context, combined, argmax per row.

Backend contract (``reference``, ``native``, ``pydecode.triton_kernels.contrastive``):
``degeneration_score(candidates, context, context_mask, probs, alpha, normalize_context) -> (best (B,),
scores (B, K))``. :func:`normalize_rows` is how contrastive search normalises the context it keeps.
"""
from __future__ import annotations

import torch

from ..backends import register_op, resolve
from ..validation import FLOAT_DTYPES, check_parameter
from .reference import normalize_rows

__all__ = ["degeneration_score", "degeneration_score_unchecked", "normalize_rows"]

register_op("degeneration_score", __name__, "contrastive")


def degeneration_score(candidates: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None,
                       probs: torch.Tensor, alpha, *, normalize_context: bool = True, backend: str | None = None):
    """Choose each row's contrastive-search candidate.

    Parameters
    ----------
    candidates : (B, K, H) fp32/fp16/bf16
        Last hidden state of each of the K candidate tokens.
    context : (B, S, H), same dtype
        Last hidden states of the tokens so far; already L2-normalised rows when ``normalize_context`` is False.
        Rows must be contiguous (the batch stride may be larger, e.g. a view of a preallocated buffer).
    context_mask : (B, S) bool or None
        False marks padding, excluded from the similarity.
    probs : (B, K) float32
        Candidate probabilities.
    alpha : float or (B,) tensor in [0, 1]
        Degeneration penalty weight.

    Returns
    -------
    best : (B,) int64
        Index in [0, K) of ``argmax_k (1 - alpha) * probs[b, k] - alpha * max_s cos(candidates[b, k], context[b, s])``
        (the first on ties; penalty 0 for a row with no unmasked context).
    scores : (B, K) float32
        The combined scores.
    """
    batch, k, hidden = _check(candidates, context, context_mask, probs)
    alpha = check_parameter("penalty_alpha", alpha, batch)
    return degeneration_score_unchecked(candidates, context, context_mask, probs, alpha, normalize_context, backend)


def degeneration_score_unchecked(candidates, context, context_mask, probs, alpha, normalize_context=True,
                                 backend=None):
    """:func:`degeneration_score` without argument checks, for the decode loop."""
    _, fn = resolve("degeneration_score", candidates.device, backend)
    return fn(candidates, context, context_mask, probs, alpha, normalize_context)


def _check(candidates, context, context_mask, probs):
    if candidates.dim() != 3 or context.dim() != 3:
        raise ValueError(f"candidates must be (B, K, H) and context (B, S, H), got {tuple(candidates.shape)} and "
                         f"{tuple(context.shape)}")
    batch, k, hidden = candidates.shape
    if context.shape[0] != batch or context.shape[2] != hidden:
        raise ValueError(f"context must have shape ({batch}, S, {hidden}), got {tuple(context.shape)}")
    if candidates.dtype not in FLOAT_DTYPES or context.dtype != candidates.dtype:
        raise TypeError(f"candidates and context must share a float dtype (fp32/fp16/bf16), got {candidates.dtype} "
                        f"and {context.dtype}")
    if k == 0 or hidden == 0:
        raise ValueError("candidates must have at least one candidate and one hidden feature")
    if probs.shape != (batch, k) or probs.dtype != torch.float32:
        raise TypeError(f"probs must be float32 of shape ({batch}, {k}), got {probs.dtype} {tuple(probs.shape)}")
    if context_mask is not None and (context_mask.shape != context.shape[:2] or context_mask.dtype != torch.bool):
        raise TypeError(f"context_mask must be bool of shape {tuple(context.shape[:2])}")
    return batch, k, hidden
