"""Pure-PyTorch reference of contrastive search's degeneration scoring (Su et al. 2022, arXiv 2202.06417)."""
from __future__ import annotations

import torch


def normalize_rows(hidden: torch.Tensor) -> torch.Tensor:
    """``hidden / ||hidden||`` along the last dimension (float32 norm, result in ``hidden``'s dtype)."""
    return (hidden.float() / hidden.float().norm(dim=-1, keepdim=True)).to(hidden.dtype)


def degeneration_score(candidates: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None,
                       probs: torch.Tensor, alpha, normalize_context: bool = True):
    """Pick each row's candidate with the best ``(1 - alpha) * p - alpha * max_s cos(candidate, context_s)``.

    ``candidates`` (B, K, H), ``context`` (B, S, H) hidden states (fp32/fp16/bf16; the context already L2-normalised
    when ``normalize_context`` is False); ``context_mask`` (B, S) bool, False = padding (excluded) or None;
    ``probs`` (B, K) float32 candidate probabilities; ``alpha`` a float or a (B,) tensor. A row with no unmasked
    context has penalty 0. Returns ``(best (B,) int64 — the first best on ties, scores (B, K) float32)``.
    """
    cand = candidates.float()
    cand = cand / cand.norm(dim=-1, keepdim=True)
    ctx = context.float()
    if normalize_context:
        ctx = ctx / ctx.norm(dim=-1, keepdim=True)
    cosine = torch.einsum("bkh,bsh->bks", cand, ctx)  # (B, K, S)
    if context_mask is not None:
        cosine = cosine.masked_fill(~context_mask[:, None, :].bool(), float("-inf"))
    penalty = cosine.amax(dim=-1) if cosine.shape[-1] > 0 else cosine.new_full(cosine.shape[:2], float("-inf"))
    penalty = torch.where(penalty == float("-inf"), torch.zeros_like(penalty), penalty)
    if isinstance(alpha, torch.Tensor):
        alpha = alpha.float().view(-1, 1)
    scores = (1.0 - alpha) * probs.float() - alpha * penalty
    return scores.argmax(dim=-1), scores
