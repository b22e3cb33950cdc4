"""Per-row sampling parameters for one generate() call, normalised once before the decode loop.

Each parameter ends up either a Python scalar (the same for every row: kernels specialise on it and skip disabled
stages) or a tensor of shape (rows,) on the model's device (kernels read ``arr[row]``). Host reads happen here, at
set-up, never inside the decode step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops.sample import dynamic_temperature
from ..ops.validation import PARAMETER_RANGES, check_parameter

_SEED_STRIDE = 0x9E3779B97F4A7C15  # row seeds of one request's return sequences are spaced by this (mod 2**64)

# the per-row parameters and their ranges (each is also the config attribute of that name)
_RANGES = {name: PARAMETER_RANGES[name] for name in (
    "temperature", "top_k", "top_p", "min_p", "typical_p", "top_h", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "frequency_penalty", "presence_penalty", "dynatemp_range", "dynatemp_exponent")}


_WARPERS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "top_h", "epsilon_cutoff", "eta_cutoff",
            "dynatemp_range", "dynatemp_exponent")


def _wrap_int64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclass
class RowParams:
    """Normalised per-row parameters: scalars where uniform, (rows,) tensors otherwise."""

    temperature: float | torch.Tensor
    top_k: int | torch.Tensor
    top_p: float | torch.Tensor
    min_p: float | torch.Tensor
    typical_p: float | torch.Tensor
    top_h: float | torch.Tensor
    epsilon_cutoff: float | torch.Tensor
    eta_cutoff: float | torch.Tensor
    repetition_penalty: float | torch.Tensor
    frequency_penalty: float | torch.Tensor
    presence_penalty: float | torch.Tensor
    seeds: torch.Tensor
    do_sample: bool
    dynatemp_range: float | torch.Tensor = 0.0
    dynatemp_exponent: float | torch.Tensor = 1.0

    @property
    def has_penalties(self) -> bool:
        return any(not _is_off(getattr(self, n), _RANGES[n].off)
                   for n in ("repetition_penalty", "frequency_penalty", "presence_penalty"))

    @property
    def cutoffs(self) -> dict:
        """The top-H, epsilon and eta parameters as keywords of the reference sampler; empty when all are off."""
        values = dict(top_h=self.top_h, epsilon=self.epsilon_cutoff, eta=self.eta_cutoff)
        return values if any(not _is_off(v, 0.0) for v in values.values()) else {}

    def temperature_of(self, scores: torch.Tensor, repeat: int = 1):
        """The temperature to divide ``scores`` (rows * repeat, V) by: the plain one, or with ``dynatemp_range``
        set the entropy-scaled one of each row (a (rows * repeat,) tensor, computed on the device)."""
        def rows(v):
            return v.repeat_interleave(repeat) if isinstance(v, torch.Tensor) and repeat > 1 else v

        if _is_off(self.dynatemp_range, 0.0):
            return rows(self.temperature)
        return dynamic_temperature(scores, rows(self.temperature), rows(self.dynatemp_range),
                                   rows(self.dynatemp_exponent))

    @property
    def has_repetition_penalty(self) -> bool:
        return not _is_off(self.repetition_penalty, 1.0)

    def select_rows(self, rows: torch.Tensor) -> "RowParams":
        """The parameters of ``rows`` only (a 1-D index tensor); scalars stay scalars."""
        picked = {name: value[rows] if isinstance(value, torch.Tensor) else value for name, value in vars(self).items()}
        return RowParams(**picked)

    @classmethod
    def build(cls, resolved, batch: int, expand: int, device) -> "RowParams":
        """Read the parameters from a :class:`ResolvedConfig` for ``batch`` prompts, each expanded ``expand`` times."""
        config = resolved.config
        do_sample = bool(config.do_sample)
        values = {}
        for name, allowed in _RANGES.items():
            per_row = name in resolved.per_row or not hasattr(config, name)
            value = resolved.extra(name) if per_row else getattr(config, name)
            if value is None:
                values[name] = allowed.off
                continue
            value = check_parameter(name, value, batch)
            if not do_sample and name in _WARPERS:
                value = 0.0 if name == "temperature" else allowed.off  # greedy: no warpers, argmax
            values[name] = _normalise(value, expand, device, torch.int32 if allowed.integer else torch.float32)
        seeds = _row_seeds(resolved.extra("seed"), batch, expand, device)
        return cls(seeds=seeds, do_sample=do_sample, **values)


def _is_off(value, off) -> bool:
    return not isinstance(value, torch.Tensor) and value == off


def _normalise(value, expand: int, device, dtype):
    """A uniform tensor becomes a scalar; otherwise expand each prompt's value to its ``expand`` rows."""
    if not isinstance(value, torch.Tensor):
        return value
    host = value.detach().cpu()
    if bool((host == host[0]).all()):
        scalar = host[0].item()
        return int(scalar) if dtype == torch.int32 else float(scalar)
    return host.to(dtype).repeat_interleave(expand).to(device)


def _row_seeds(seed, batch: int, expand: int, device) -> torch.Tensor:
    """Seeds of every row: prompt i's j-th return sequence uses ``seed_i + j * stride`` (mod 2**64).

    With a scalar (or no) seed, prompt i's seed is ``seed + i``: pass a (batch,) tensor of per-request seeds to make
    each row's output independent of the batch it runs in. No seed draws one from torch's global generator, so
    ``torch.manual_seed`` makes runs reproducible as with transformers.
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, torch.Tensor):
        if seed.dim() != 1 or seed.shape[0] != batch:
            raise ValueError(f"seed as a tensor must have shape ({batch},), one value per prompt, "
                             f"got {tuple(seed.shape)}")
        if seed.dtype.is_floating_point:
            raise TypeError(f"seed must hold integers, got {seed.dtype}")
        base = [int(s) for s in seed.tolist()]
    elif isinstance(seed, int) and not isinstance(seed, bool):
        base = [seed + i for i in range(batch)]
    else:
        raise TypeError(f"seed must be an int or an int64 tensor of shape ({batch},), got {type(seed).__name__}")
    rows = [_wrap_int64(s + j * _SEED_STRIDE) for s in base for j in range(expand)]
    return torch.tensor(rows, dtype=torch.int64, device=device)
