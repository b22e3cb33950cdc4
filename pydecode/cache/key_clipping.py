"""Range clipping for KIVI keys: shrink each per-channel group's min/max range to the one with the least error.

A channel's group of ``G`` tokens is quantized over its min/max range, so one spiking token stretches the step for the
other ``G - 1``: at 2 bits (four levels) most of them collapse onto one code. As in the ``mse`` range search of
GPTQ's quantizer and AWQ's clipping search, each group tries ranges shrunk about their midpoint by the factors of
:data:`CLIP_RATIOS` and keeps the one with the least squared error (the clipped spike loses more, the rest far less).
The keys are clamped to that range before ``kivi_pack``, whose min/max then finds it: every backend stays as it is.
"""
from __future__ import annotations

import torch

CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)


def clip_key_groups(keys: torch.Tensor, valid: torch.Tensor | None, nbits: int, group_size: int) -> torch.Tensor:
    """Clamp ``keys (B, H, T, D)`` (``T`` a multiple of ``group_size``) per channel and group of tokens to the
    shrunk min/max range with the least squared quantization error; ``valid (B, T)`` bool leaves padding out.

    Returns a new tensor of the same shape and dtype (the squared errors are measured in float32).
    """
    b, h, t, d = keys.shape
    x = keys.float().reshape(b, h, t // group_size, group_size, d)
    ok = None if valid is None else valid.reshape(b, 1, t // group_size, group_size, 1)
    lo = x if ok is None else torch.where(ok, x, float("inf"))
    hi = x if ok is None else torch.where(ok, x, float("-inf"))
    lo, hi = lo.amin(3, keepdim=True), hi.amax(3, keepdim=True)
    empty = torch.isinf(lo)  # a group that is all padding
    lo, hi = lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)
    mid, half = (hi + lo) / 2, (hi - lo) / 2
    levels = (1 << nbits) - 1
    best_lo, best_hi, best_err = lo, hi, None
    for ratio in CLIP_RATIOS:
        c_lo, c_hi = mid - ratio * half, mid + ratio * half
        step = (c_hi - c_lo) / levels
        safe = torch.where(step > 0, step, 1.0)
        codes = torch.floor((x - c_lo) / safe + 0.5).clamp_(0, levels)
        error = (codes * step + c_lo - x).square()
        if ok is not None:
            error = error.masked_fill(~ok, 0.0)
        error = error.sum(3, keepdim=True)
        if best_err is None:
            best_err = error
            continue
        better = error < best_err
        best_lo, best_hi = torch.where(better, c_lo, best_lo), torch.where(better, c_hi, best_hi)
        best_err = torch.where(better, error, best_err)
    return torch.minimum(torch.maximum(x, best_lo), best_hi).reshape(b, h, t, d).to(keys.dtype)
