"""Dynamic (entropy-scaled) temperature, llama.cpp's ``temp_ext`` sampler (KoboldCpp's "DynaTemp").

For a row with base temperature ``t > 0``, range ``r > 0`` and exponent ``e``, over its candidates (the tokens with
a finite score; ``n`` of them):

    H      = -sum p log p                 entropy of softmax(scores)
    H_max  = log n                        entropy of the uniform distribution over the candidates
    t_min  = max(0, t - r),  t_max = t + r
    t_dyn  = t_min + (t_max - t_min) * (H / H_max) ** e

A confident (low-entropy) distribution is sampled cooler, a flat one hotter. Rows with ``r == 0``, greedy rows
(``t == 0``) and rows with at most one candidate keep ``t``. ``t_dyn == 0`` makes the row greedy.
"""
from __future__ import annotations

import torch

from ..rows import per_row, sanitize


def dynamic_temperature(scores: torch.Tensor, temperature, dynatemp_range, dynatemp_exponent) -> torch.Tensor:
    """(B,) float32 temperature of each row of ``scores`` (B, V); the parameters are scalars or (B,) tensors."""
    batch = scores.shape[0]
    device = scores.device
    t = per_row(temperature, batch, device, torch.float32)
    r = per_row(dynatemp_range, batch, device, torch.float32)
    e = per_row(dynatemp_exponent, batch, device, torch.float32)
    scores = sanitize(scores)
    candidates = torch.isfinite(scores).sum(-1, keepdim=True)
    log_probs = scores.log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).nan_to_num(0.0).sum(-1, keepdim=True)
    normalised = entropy / candidates.clamp(min=2).to(torch.float32).log()
    low = (t - r).clamp(min=0.0)
    dynamic = low + (t + r - low) * normalised.clamp(0.0, 1.0).pow(e)
    return torch.where((r > 0) & (t > 0) & (candidates > 1), dynamic, t).view(batch)
