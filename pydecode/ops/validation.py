"""Argument checks shared by the public ops and generate(): clear errors naming the parameter and its range."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Range:
    """The values a sampling parameter may take, and the one that turns it off."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    off: float | None = None


_INF = float("inf")
# the one table of per-row parameter ranges: generate() (RowParams), SamplingParams and the ops check against it
PARAMETER_RANGES = {
    "temperature": Range(0.0, _INF, high_open=True, off=1.0),
    "top_k": Range(0, _INF, high_open=True, integer=True, off=0),
    "top_p": Range(0.0, 1.0, low_open=True, off=1.0),
    "min_p": Range(0.0, 1.0, off=0.0),
    "typical_p": Range(0.0, 1.0, low_open=True, off=1.0),
    "top_h": Range(0.0, 1.0, off=0.0),  # 0 is off (transformers: None), per row too
    "epsilon_cutoff": Range(0.0, 1.0, high_open=True, off=0.0),
    "eta_cutoff": Range(0.0, 1.0, high_open=True, off=0.0),
    "repetition_penalty": Range(0.0, _INF, low_open=True, high_open=True, off=1.0),
    "frequency_penalty": Range(-2.0, 2.0, off=0.0),
    "presence_penalty": Range(-2.0, 2.0, off=0.0),
    "dynatemp_range": Range(0.0, _INF, high_open=True, off=0.0),
    "dynatemp_exponent": Range(0.0, _INF, high_open=True, off=1.0),
    "penalty_alpha": Range(0.0, 1.0, off=0.0),
}


def check_parameter(name: str, value, batch: int):
    """:func:`check_per_row` against ``name``'s entry of :data:`PARAMETER_RANGES`."""
    r = PARAMETER_RANGES[name]
    return check_per_row(name, value, batch, r.low, r.high, r.low_open, r.high_open, r.integer)


def check_logits(logits: torch.Tensor, name: str = "logits") -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dim() != 2:
        raise ValueError(f"{name} must have shape (batch, vocab), got {tuple(logits.shape)}")
    if logits.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {logits.dtype}")
    if logits.shape[1] == 0:
        raise ValueError(f"{name} must have a vocabulary of at least one token")


def check_per_row(name: str, value, batch: int, low: float, high: float, low_open: bool = False,
                  high_open: bool = False, integer: bool = False):
    """Check a scalar-or-(B,) parameter lies in its range; return it (tensors unchanged, scalars as float/int).

    Tensor values are checked on the host once (call this at set-up, never inside the decode step).
    """
    lo_br, hi_br = ("(" if low_open else "["), (")" if high_open else "]")
    allowed = f"{lo_br}{low}, {high}{hi_br}"
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.shape[0] != batch:
            raise ValueError(f"{name} as a tensor must have shape ({batch},), one value per row, "
                             f"got {tuple(value.shape)}")
        if integer and value.dtype.is_floating_point:
            raise TypeError(f"{name} must hold integers, got {value.dtype}")
        values = value.detach().double().cpu()
        bad = torch.isnan(values) | (values < low) | (values > high)
        if low_open:
            bad |= values == low
        if high_open:
            bad |= values == high
        if bool(bad.any()):
            raise ValueError(f"{name} must lie in {allowed} for every row, got {values[bad][0].item()}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or a tensor of shape ({batch},), got {type(value).__name__}")
    if integer and not isinstance(value, int):
        if float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {value}")
    v = float(value)
    if math.isnan(v) or v < low or v > high or (low_open and v == low) or (high_open and v == high):
        raise ValueError(f"{name} must lie in {allowed}, got {value}")
    return value


def check_seeds(seeds, batch: int) -> torch.Tensor:
    if not isinstance(seeds, torch.Tensor) or seeds.dim() != 1 or seeds.shape[0] != batch:
        raise ValueError(f"seeds must be an int64 tensor of shape ({batch},)")
    if seeds.dtype != torch.int64:
        raise TypeError(f"seeds must be int64, got {seeds.dtype}")
    return seeds


def check_tokens(tokens, batch: int, vocab: int, name: str = "tokens") -> torch.Tensor:
    """``tokens`` must be an integer tensor of shape (batch,) with every id in [0, vocab) (checked on the host: call
    this in the public ops, never inside the decode step)."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"{name} must be int64 or int32 token ids, got {tokens.dtype}")
    if tokens.shape != (batch,):
        raise ValueError(f"{name} must have shape ({batch},), one id per row, got {tuple(tokens.shape)}")
    if batch and not 0 <= int(tokens.min()) <= int(tokens.max()) < vocab:
        bad = tokens[(tokens < 0) | (tokens >= vocab)][0].item()
        raise ValueError(f"{name} must lie in [0, vocab = {vocab}), got {bad}")
    return tokens
