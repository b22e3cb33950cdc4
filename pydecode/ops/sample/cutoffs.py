"""Entropy- and probability-cutoff warpers with transformers' semantics: top-H, epsilon and eta sampling.

They run after typical (top-H right after temperature, as transformers orders them), on the reference path only.
Parameters are per row (a Python scalar or a (B,) tensor); a row whose value is the "off" value (0) is unchanged.
Removed entries become ``-inf``; epsilon and eta always keep a row's ``min_keep`` largest entries (ties included).
"""
from __future__ import annotations

import torch

from ..rows import per_row

TOP_H_CANDIDATES = 100  # top-H looks at this many of the most probable tokens, as transformers does


def _entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(entropy (B,), probs (B, N))`` of the categorical distribution ``softmax(logits)``, computed as
    ``torch.distributions.Categorical`` does (log-probabilities clamped to the dtype's lowest finite value)."""
    normalized = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = normalized.softmax(dim=-1)
    clamped = normalized.clamp(min=torch.finfo(logits.dtype).min)
    return -(clamped * probs).sum(-1), probs


def _active(value, off) -> bool:
    return isinstance(value, torch.Tensor) or value != off


def top_h_filter(logits: torch.Tensor, top_h) -> torch.Tensor:
    """Top-H (arXiv 2509.02510): among the 100 most probable tokens, keep the most probable ones while their
    cumulative entropy ``sum -p log p`` stays within ``top_h`` times the entropy of those 100 (the first always)."""
    if not _active(top_h, 0.0):
        return logits
    batch, vocab = logits.shape
    h = per_row(top_h, batch, logits.device, torch.float32)
    top_logits, top_idx = logits.topk(min(TOP_H_CANDIDATES, vocab), dim=-1)
    entropy, probs = _entropy(top_logits)
    cumulative = (-probs * probs.log()).cumsum(dim=-1)
    selected = cumulative <= entropy[:, None] * h
    selected[:, 0] = True
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, top_idx, selected)
    return torch.where((h > 0) & ~keep, float("-inf"), logits)


def _cut_below(logits: torch.Tensor, threshold: torch.Tensor, min_keep: int) -> torch.Tensor:
    """Remove the entries whose probability is below ``threshold`` (B, 1), but for the ``min_keep`` largest."""
    remove = logits.softmax(dim=-1) < threshold
    kth = logits.topk(min(min_keep, logits.shape[-1]), dim=-1).values[:, -1:]
    return logits.masked_fill(remove & (logits < kth), float("-inf"))


def epsilon_filter(logits: torch.Tensor, epsilon, min_keep: int = 1) -> torch.Tensor:
    """Epsilon sampling (Hewitt et al., arXiv 2210.15191): drop tokens with probability below ``epsilon``."""
    if not _active(epsilon, 0.0):
        return logits
    eps = per_row(epsilon, logits.shape[0], logits.device, torch.float32)
    return _cut_below(logits, torch.where(eps > 0, eps, 0.0), min_keep)


def eta_filter(logits: torch.Tensor, eta, min_keep: int = 1) -> torch.Tensor:
    """Eta sampling (Hewitt et al.): drop tokens with probability below ``min(eta, sqrt(eta) * exp(-entropy))``."""
    if not _active(eta, 0.0):
        return logits
    eps = per_row(eta, logits.shape[0], logits.device, torch.float32)
    entropy, _ = _entropy(logits)
    threshold = torch.minimum(eps, eps.sqrt() * torch.exp(-entropy)[:, None])
    return _cut_below(logits, torch.where(eps > 0, threshold, 0.0), min_keep)
