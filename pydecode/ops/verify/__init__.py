"""The speculative-verification op: accepted draft length and the next token per row, on the fastest backend.

Backend contract (``reference``, ``native``, ``pydecode.triton_kernels.verify``):
``verify(draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds, step) -> (accepted (B,),
next_tokens (B,))``.
"""
from __future__ import annotations

import torch

from ..backends import register_op, resolve
from ..validation import check_parameter, check_seeds

register_op("verify", __name__, "verify")


def verify(draft_tokens: torch.Tensor, draft_logits: torch.Tensor | None, target_logits: torch.Tensor,
           num_draft: torch.Tensor, temperature=1.0, *, seeds: torch.Tensor, step: int = 0,
           backend: str | None = None):
    """Verify K draft tokens per row against the target model (semantics in :mod:`.reference`).

    Parameters
    ----------
    draft_tokens : (B, K) int64, K >= 1
    draft_logits : (B, K, V) float32 processed draft logits, or None for a deterministic draft (prompt lookup)
    target_logits : (B, K + 1, V) float32 processed target logits at the K draft positions and the one after
    num_draft : (B,) int64 in [0, K]; row b's drafts past ``num_draft[b]`` are padding and never accepted
    temperature : float >= 0 or (B,) tensor; only its sign is read: 0 makes the row greedy
    seeds : (B,) int64; with ``step`` it selects the counter-based random stream
    backend : "auto" | "torch" | "cpp" | "triton" | "cuda"

    Returns
    -------
    accepted : (B,) int64, how many leading drafts each row accepts
    next_tokens : (B,) int64, the correction (at a rejection) or bonus token that follows them
    """
    if draft_tokens.dim() != 2 or draft_tokens.dtype != torch.int64 or draft_tokens.shape[1] < 1:
        raise ValueError(f"draft_tokens must be int64 of shape (B, K) with K >= 1, got {draft_tokens.dtype} "
                         f"{tuple(draft_tokens.shape)}")
    batch, k = draft_tokens.shape
    if target_logits.dim() != 3 or target_logits.shape[:2] != (batch, k + 1) or target_logits.dtype != torch.float32:
        raise ValueError(f"target_logits must be float32 of shape ({batch}, {k + 1}, V), got {target_logits.dtype} "
                         f"{tuple(target_logits.shape)}")
    vocab = target_logits.shape[2]
    if draft_logits is not None and (draft_logits.shape != (batch, k, vocab) or draft_logits.dtype != torch.float32):
        raise ValueError(f"draft_logits must be float32 of shape ({batch}, {k}, {vocab}), got {draft_logits.dtype} "
                         f"{tuple(draft_logits.shape)}")
    if num_draft.shape != (batch,) or num_draft.dtype != torch.int64:
        raise ValueError(f"num_draft must be int64 of shape ({batch},)")
    if bool(((num_draft < 0) | (num_draft > k)).any()) or bool(((draft_tokens < 0) | (draft_tokens >= vocab)).any()):
        raise ValueError(f"num_draft must lie in [0, {k}] and draft_tokens in [0, {vocab})")
    temperature = check_parameter("temperature", temperature, batch)
    seeds = check_seeds(seeds, batch)
    return verify_unchecked(draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds, step, backend)


def verify_unchecked(draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds, step, backend=None):
    """:func:`verify` without argument checks, for the decode loop."""
    _, fn = resolve("verify", target_logits.device, backend)
    return fn(draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds, int(step))
