"""Helpers shared by the reference ops: per-row parameters and sanitized float32 logits."""
from __future__ import annotations

import torch


def per_row(value, batch: int, device, dtype) -> torch.Tensor:
    """A (B, 1) tensor from a scalar or a (B,) tensor."""
    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype).reshape(batch, 1)
    return torch.full((batch, 1), value, device=device, dtype=dtype)


def sanitize(logits: torch.Tensor) -> torch.Tensor:
    """float32 copy of ``logits`` with NaN replaced by ``-inf``."""
    logits = logits.to(torch.float32, copy=True)
    return logits.masked_fill_(torch.isnan(logits), float("-inf"))
