"""Adapters from the KIVI op contracts (:mod:`.reference`) to the compiled ops ``torch.ops.pydecode.kivi_*``.

The same functions serve the ``cpp`` and ``cuda`` backends (torch dispatches on the device). The fake
implementations let ``torch.compile`` trace the ops without running them.
"""
from __future__ import annotations

import torch

import pydecode._C  # noqa: F401  (registers torch.ops.pydecode.*)

_ops = torch.ops.pydecode


def kivi_pack(x, valid, nbits, group_size, per_channel, meta_dtype):
    """Native ``kivi_pack`` (contract: :func:`pydecode.ops.kivi.reference.kivi_pack`)."""
    return _ops.kivi_pack(x, valid, nbits, group_size, per_channel, meta_dtype)


def kivi_attention(query, key_codes, key_scale, key_zero, value_codes, value_scale, value_zero, residual_keys,
                   residual_values, mask, n_quant, n_residual, scale, nbits, group_size):
    """Native ``kivi_attention`` (contract: :func:`pydecode.ops.kivi.reference.kivi_attention`)."""
    return _ops.kivi_attention(query, key_codes, key_scale, key_zero, value_codes, value_scale, value_zero,
                               residual_keys, residual_values, mask, n_quant, n_residual, scale, nbits, group_size)


@torch.library.register_fake("pydecode::kivi_pack")
def _pack_fake(x, valid, nbits, group_size, per_channel, meta_dtype):
    b, h, t, d = x.shape
    f = 32 // nbits
    if per_channel:
        codes, meta = (b, h, t // f, d), (b, h, t // group_size, d)
    else:
        codes, meta = (b, h, t, d // f), (b, h, t, d // group_size)
    scale = x.new_empty(meta, dtype=meta_dtype)
    return x.new_empty(codes, dtype=torch.int32), scale, torch.empty_like(scale)


@torch.library.register_fake("pydecode::kivi_attention")
def _attention_fake(query, key_codes, key_scale, key_zero, value_codes, value_scale, value_zero, residual_keys,
                    residual_values, mask, n_quant, n_residual, scale, nbits, group_size):
    return torch.empty_like(query)
