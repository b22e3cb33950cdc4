"""Pure-PyTorch KIVI reference: the truth every kernel is tested against, and the ``torch`` backend.

Layout (shared by every backend). ``F = 32 // nbits`` codes fill one int32 word, code ``j`` of a word sits in bits
``[j * nbits, (j + 1) * nbits)``. Quantization is asymmetric: ``x ~= code * scale + zero`` with
``zero = min`` and ``scale = (max - min) / (2**nbits - 1)`` over a group of ``G`` elements.

- keys, per channel (groups of ``G`` consecutive tokens, one scale/zero per group and channel):
  codes ``(B, H, T // F, D)`` packed along tokens, scale/zero ``(B, H, T // G, D)``.
- values, per token (groups of ``G`` consecutive channels):
  codes ``(B, H, T, D // F)`` packed along channels, scale/zero ``(B, H, T, D // G)``.

``valid`` (``(B, T)`` bool, optional) leaves tokens out of the key min/max (left padding must not widen the range of
the real tokens sharing its group); values are per token, so they need no such mask.
"""
from __future__ import annotations

import torch

__all__ = [
    "pack_codes", "unpack_codes", "kivi_pack", "dequantize_keys", "dequantize_values", "kivi_attention",
]


def pack_codes(codes: torch.Tensor, nbits: int, dim: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2**nbits)`` along ``dim`` (size divisible by ``32 // nbits``) into int32 words."""
    per_word = 32 // nbits
    codes = codes.movedim(dim, -1).to(torch.int32)
    codes = codes.reshape(*codes.shape[:-1], codes.shape[-1] // per_word, per_word)
    shifts = torch.arange(per_word, device=codes.device, dtype=torch.int32) * nbits
    # The slots hold disjoint bits, so the sum is their bitwise OR (int32 wrap-around keeps the top bit exact).
    return (codes << shifts).sum(-1, dtype=torch.int32).movedim(-1, dim).contiguous()


def unpack_codes(words: torch.Tensor, nbits: int, dim: int) -> torch.Tensor:
    """Inverse of :func:`pack_codes`: int32 words -> int32 codes, ``32 // nbits`` times longer along ``dim``."""
    per_word = 32 // nbits
    shifts = torch.arange(per_word, device=words.device, dtype=torch.int32) * nbits
    codes = (words.movedim(dim, -1).unsqueeze(-1) >> shifts) & ((1 << nbits) - 1)
    return codes.flatten(-2).movedim(-1, dim).contiguous()


def _quantize_groups(x: torch.Tensor, valid: torch.Tensor | None, nbits: int, meta_dtype: torch.dtype):
    """Quantize ``x (..., n, G)`` over its last dim; ``valid`` broadcasts to ``x``. Returns codes, scale, zero."""
    x = x.float()
    if valid is None:
        lo, hi = x.amin(-1), x.amax(-1)
    else:
        lo = torch.where(valid, x, float("inf")).amin(-1)
        hi = torch.where(valid, x, float("-inf")).amax(-1)
        empty = torch.isinf(lo)
        lo, hi = lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)
    levels = (1 << nbits) - 1
    # Codes are computed against the stored (rounded) scale and zero, so dequantization is within half a step of them.
    scale = ((hi - lo) / levels).to(meta_dtype)
    zero = lo.to(meta_dtype)
    s, z = scale.float().unsqueeze(-1), zero.float().unsqueeze(-1)
    # floor(y + 0.5) rather than round-half-even: every backend can reproduce it bit for bit.
    codes = torch.where(s > 0, torch.floor((x - z) / torch.where(s > 0, s, 1.0) + 0.5), torch.zeros_like(x))
    return codes.clamp_(0, levels).to(torch.int32), scale, zero


def kivi_pack(
    x: torch.Tensor, valid: torch.Tensor | None, nbits: int, group_size: int, per_channel: bool,
    meta_dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize and pack ``x (B, H, T, D)``: keys with ``per_channel=True``, values with ``per_channel=False``.

    Returns ``(codes int32, scale, zero)`` in the layout of the module docstring; scale/zero have ``meta_dtype``.
    """
    b, h, t, d = x.shape
    g = group_size
    if per_channel:
        groups = x.reshape(b, h, t // g, g, d).transpose(-1, -2)  # (B, H, T/G, D, G)
        mask = None if valid is None else valid.reshape(b, 1, t // g, 1, g)
        codes, scale, zero = _quantize_groups(groups, mask, nbits, meta_dtype)
        codes = codes.transpose(-1, -2).reshape(b, h, t, d)
        return pack_codes(codes, nbits, dim=2), scale, zero
    groups = x.reshape(b, h, t, d // g, g)
    codes, scale, zero = _quantize_groups(groups, None, nbits, meta_dtype)
    return pack_codes(codes.reshape(b, h, t, d), nbits, dim=3), scale, zero


def dequantize_keys(codes, scale, zero, nbits: int, group_size: int, n_tokens: int) -> torch.Tensor:
    """Float32 keys ``(B, H, n_tokens, D)`` from the first ``n_tokens`` of a packed per-channel key store."""
    k = unpack_codes(codes, nbits, dim=2)[:, :, :n_tokens].float()
    s = scale.float().repeat_interleave(group_size, dim=2)[:, :, :n_tokens]
    z = zero.float().repeat_interleave(group_size, dim=2)[:, :, :n_tokens]
    return k * s + z


def dequantize_values(codes, scale, zero, nbits: int, group_size: int, n_tokens: int) -> torch.Tensor:
    """Float32 values ``(B, H, n_tokens, D)`` from the first ``n_tokens`` of a packed per-token value store."""
    v = unpack_codes(codes[:, :, :n_tokens], nbits, dim=3).float()
    s = scale[:, :, :n_tokens].float().repeat_interleave(group_size, dim=3)
    z = zero[:, :, :n_tokens].float().repeat_interleave(group_size, dim=3)
    return v * s + z


def kivi_attention(
    query: torch.Tensor,
    key_codes: torch.Tensor, key_scale: torch.Tensor, key_zero: torch.Tensor,
    value_codes: torch.Tensor, value_scale: torch.Tensor, value_zero: torch.Tensor,
    residual_keys: torch.Tensor, residual_values: torch.Tensor,
    mask: torch.Tensor | None, n_quant: int, n_residual: int, scale: float, nbits: int, group_size: int,
) -> torch.Tensor:
    """Attention of ``query (B, Hq, Q, D)`` over ``n_quant`` packed tokens followed by ``n_residual`` fp tokens.

    The packed stores and residual buffers may hold more (capacity) than is used. ``mask (B, Q, n_quant +
    n_residual)`` bool, True = attend; ``None`` means causal, aligned to the last key (query ``i`` sees keys up to
    ``N - Q + i``). GQA: query head ``h`` reads kv head ``h // (Hq // Hkv)``. Returns ``(B, Hq, Q, D)`` in
    ``query.dtype``; the reference dequantizes, then runs softmax attention in float32.
    """
    k = dequantize_keys(key_codes, key_scale, key_zero, nbits, group_size, n_quant)
    v = dequantize_values(value_codes, value_scale, value_zero, nbits, group_size, n_quant)
    k = torch.cat([k, residual_keys[:, :, :n_residual].float()], dim=2)
    v = torch.cat([v, residual_values[:, :, :n_residual].float()], dim=2)
    q_len, n = query.shape[2], k.shape[2]
    if mask is None:
        mask = torch.ones(q_len, n, dtype=torch.bool, device=query.device).tril(n - q_len)
        mask = mask.expand(query.shape[0], q_len, n)
    out = torch.nn.functional.scaled_dot_product_attention(
        query.float(), k, v, attn_mask=mask[:, None], scale=scale, enable_gqa=True,
    )
    return out.to(query.dtype)
