"""KIVI ops with interchangeable backends: ``kivi_pack`` (quantize + pack) and ``kivi_attention`` (on the packed cache).

Backends (see :mod:`pydecode.ops.backends`): ``torch`` (:mod:`.reference`, the oracle), ``cpp`` (C++/OpenMP),
``cuda`` (CUDA, attention and pack), ``triton`` (both ops). Every backend implements the contracts of
:func:`pydecode.ops.kivi.reference.kivi_pack` and :func:`pydecode.ops.kivi.reference.kivi_attention`.
"""
from __future__ import annotations

import torch

from ..backends import register_op, resolve

register_op("kivi_pack", __name__, "kivi")
register_op("kivi_attention", __name__, "kivi")

SUPPORTED_NBITS = (2, 4)
GROUP_MULTIPLE = 16  # a group fills whole int32 words at 2 and 4 bits, and a 16-wide tile for tensor-core dots
DEFAULT_SINK_LENGTH = 4  # first tokens kept exact; chosen by measurement (benchmarks/README.md, KIVI: sink length)


def validate_kivi_config(nbits: int, group_size: int, residual_length: int, head_dim: int | None = None,
                         sink_length: int = 0, key_clipping: bool = False) -> None:
    """Raise ``ValueError`` unless the KIVI settings are usable (with ``head_dim``, for that head size)."""
    if nbits not in SUPPORTED_NBITS:
        raise ValueError(f"nbits must be one of {SUPPORTED_NBITS}, got {nbits!r}")
    if not isinstance(group_size, int) or group_size <= 0 or group_size % GROUP_MULTIPLE:
        raise ValueError(f"group_size must be a positive multiple of {GROUP_MULTIPLE}, got {group_size!r}")
    if not isinstance(residual_length, int) or residual_length < 0 or residual_length % group_size:
        raise ValueError(
            f"residual_length must be a non-negative multiple of group_size={group_size}, got {residual_length!r}"
        )
    if not isinstance(sink_length, int) or isinstance(sink_length, bool) or sink_length < 0:
        raise ValueError(f"sink_length must be a non-negative int, got {sink_length!r}")
    if not isinstance(key_clipping, bool):
        raise ValueError(f"key_clipping must be True or False, got {key_clipping!r}")
    if head_dim is not None and head_dim % group_size:
        raise ValueError(
            f"head_dim={head_dim} must be divisible by group_size={group_size} (values are grouped along head_dim)"
        )


def kivi_pack(
    x: torch.Tensor, valid: torch.Tensor | None, nbits: int, group_size: int, per_channel: bool,
    meta_dtype: torch.dtype, backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize + pack ``x (B, H, T, D)`` (``T`` a multiple of ``group_size``) as KIVI keys or values.

    Parameters
    ----------
    x : (B, H, T, D) float tensor.
    valid : (B, T) bool or None; False leaves a token out of the per-channel key statistics.
    nbits, group_size : 2 or 4 bits; group of ``group_size`` tokens (keys) or channels (values).
    per_channel : True for keys (groups along tokens), False for values (groups along head_dim).
    meta_dtype : dtype of the returned scale and zero (float32 or float16).
    backend : None/"auto" or a backend name (see :mod:`pydecode.ops.backends`).

    Returns
    -------
    codes (int32), scale, zero in the layout of :mod:`pydecode.ops.kivi.reference`.
    """
    _, fn = resolve("kivi_pack", x.device, backend)
    x = x.contiguous()
    valid = None if valid is None or not per_channel else valid.to(torch.bool).contiguous()
    return fn(x, valid, nbits, group_size, per_channel, meta_dtype)


def kivi_attention(
    query: torch.Tensor, key_codes, key_scale, key_zero, value_codes, value_scale, value_zero,
    residual_keys: torch.Tensor, residual_values: torch.Tensor, mask: torch.Tensor | None,
    n_quant: int, n_residual: int, scale: float, nbits: int, group_size: int, backend: str | None = None,
) -> torch.Tensor:
    """Attention of ``query (B, Hq, Q, D)`` over a packed KIVI store plus its full-precision residual.

    See :func:`pydecode.ops.kivi.reference.kivi_attention` for the shapes; ``mask (B, Q, n_quant + n_residual)`` bool
    (True = attend) or None (causal, aligned to the last key). Returns ``(B, Hq, Q, D)`` in ``query.dtype``.
    """
    _, fn = resolve("kivi_attention", query.device, backend)
    if mask is not None:
        mask = mask.to(torch.bool).contiguous()
    return fn(
        query.contiguous(), key_codes, key_scale, key_zero, value_codes, value_scale, value_zero,
        residual_keys, residual_values, mask, int(n_quant), int(n_residual), float(scale), nbits, group_size,
    )
