"""KIVI Triton kernels: quantize + pack (keys per channel, values per token) and flash-decoding attention on the
packed cache. Layouts and contracts: ``pydecode.ops.kivi.reference`` (``kivi_pack``, ``kivi_attention``).

The attention runs one program per (batch row, kv head, sequence split). A program serves every query row that reads
its kv head (GQA: ``Hq // Hkv`` heads x ``Q`` queries), so each packed tile is loaded and dequantized once in
registers. Tiles are one quantization group (``G`` tokens): a tile lies wholly in the packed part or wholly in the
residual, as the packed part ends on a group boundary. Splits write partial (max, sum, acc) that are merged after.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._jit import launch_constants


@triton.jit
def _pack_keys_kernel(x_ptr, valid_ptr, codes_ptr, scale_ptr, zero_ptr, H, T, D,
                      HAS_VALID: tl.constexpr, NBITS: tl.constexpr, G: tl.constexpr, BLOCK_D: tl.constexpr):
    """One program per (b*h, group of G tokens, channel block): per-channel min/max over the group's tokens."""
    bh, grp, pd = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    F: tl.constexpr = 32 // NBITS
    LEVELS: tl.constexpr = (1 << NBITS) - 1
    t = tl.arange(0, G)
    d = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    x_base = x_ptr + bh.to(tl.int64) * T * D + grp * G * D
    x = tl.load(x_base + t[:, None] * D + d[None, :], mask=dmask[None, :], other=0.0).to(tl.float32)
    if HAS_VALID:
        ok = tl.load(valid_ptr + (bh // H) * T + grp * G + t) != 0
        lo = tl.min(tl.where(ok[:, None], x, float("inf")), axis=0)
        hi = tl.max(tl.where(ok[:, None], x, float("-inf")), axis=0)
        empty = lo == float("inf")
        lo = tl.where(empty, 0.0, lo)
        hi = tl.where(empty, 0.0, hi)
    else:
        lo = tl.min(x, axis=0)
        hi = tl.max(x, axis=0)
    meta_ty = scale_ptr.dtype.element_ty
    scale = ((hi - lo) / LEVELS).to(meta_ty)
    zero = lo.to(meta_ty)
    meta_off = bh.to(tl.int64) * (T // G) * D + grp * D + d
    tl.store(scale_ptr + meta_off, scale, mask=dmask)
    tl.store(zero_ptr + meta_off, zero, mask=dmask)
    s, z = scale.to(tl.float32), zero.to(tl.float32)
    inv_ok = s > 0
    s_div = tl.where(inv_ok, s, 1.0)
    w = tl.arange(0, G // F)
    word = tl.zeros((G // F, BLOCK_D), dtype=tl.int32)
    for j in tl.static_range(F):
        xj = tl.load(x_base + (w * F + j)[:, None] * D + d[None, :], mask=dmask[None, :], other=0.0)
        c = tl.floor((xj.to(tl.float32) - z[None, :]) / s_div[None, :] + 0.5)
        c = tl.where(inv_ok[None, :], tl.minimum(tl.maximum(c, 0.0), LEVELS), 0.0).to(tl.int32)
        word = word | (c << (j * NBITS))
    code_off = bh.to(tl.int64) * (T // F) * D + (grp * (G // F) + w)[:, None] * D + d[None, :]
    tl.store(codes_ptr + code_off, word, mask=dmask[None, :])


@triton.jit
def _pack_values_kernel(x_ptr, codes_ptr, scale_ptr, zero_ptr, N, D,
                        NBITS: tl.constexpr, G: tl.constexpr, BLOCK_T: tl.constexpr):
    """One program per (block of BLOCK_T token rows of all b*h, channel group): per-token min/max over G channels."""
    pt, grp = tl.program_id(0), tl.program_id(1)
    F: tl.constexpr = 32 // NBITS
    LEVELS: tl.constexpr = (1 << NBITS) - 1
    rows = pt * BLOCK_T + tl.arange(0, BLOCK_T)
    rmask = rows < N
    c = tl.arange(0, G)
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * D + grp * G
    x = tl.load(x_rows + c[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
    lo = tl.min(x, axis=1)
    hi = tl.max(x, axis=1)
    meta_ty = scale_ptr.dtype.element_ty
    scale = ((hi - lo) / LEVELS).to(meta_ty)
    zero = lo.to(meta_ty)
    meta_off = rows.to(tl.int64) * (D // G) + grp
    tl.store(scale_ptr + meta_off, scale, mask=rmask)
    tl.store(zero_ptr + meta_off, zero, mask=rmask)
    s, z = scale.to(tl.float32), zero.to(tl.float32)
    inv_ok = s > 0
    s_div = tl.where(inv_ok, s, 1.0)
    w = tl.arange(0, G // F)
    word = tl.zeros((BLOCK_T, G // F), dtype=tl.int32)
    for j in tl.static_range(F):
        xj = tl.load(x_rows + (w * F + j)[None, :], mask=rmask[:, None], other=0.0).to(tl.float32)
        q = tl.floor((xj - z[:, None]) / s_div[:, None] + 0.5)
        q = tl.where(inv_ok[:, None], tl.minimum(tl.maximum(q, 0.0), LEVELS), 0.0).to(tl.int32)
        word = word | (q << (j * NBITS))
    code_off = rows.to(tl.int64)[:, None] * (D // F) + grp * (G // F) + w[None, :]
    tl.store(codes_ptr + code_off, word, mask=rmask[:, None])


def kivi_pack(x, valid, nbits, group_size, per_channel, meta_dtype):
    """Triton ``kivi_pack`` (contract: :func:`pydecode.ops.kivi.reference.kivi_pack`)."""
    b, h, t, d = x.shape
    g, f = group_size, 32 // nbits
    x = x.contiguous()
    if per_channel:
        codes = torch.empty(b, h, t // f, d, dtype=torch.int32, device=x.device)
        scale = torch.empty(b, h, t // g, d, dtype=meta_dtype, device=x.device)
        zero = torch.empty_like(scale)
        if t:
            block_d = min(64, triton.next_power_of_2(d))
            valid_arg = codes if valid is None else valid.to(torch.uint8).contiguous()
            _pack_keys_kernel[(b * h, t // g, triton.cdiv(d, block_d))](
                x, valid_arg, codes, scale, zero, h, t, d,
                HAS_VALID=valid is not None, NBITS=nbits, G=g, BLOCK_D=block_d)
        return codes, scale, zero
    codes = torch.empty(b, h, t, d // f, dtype=torch.int32, device=x.device)
    scale = torch.empty(b, h, t, d // g, dtype=meta_dtype, device=x.device)
    zero = torch.empty_like(scale)
    n = b * h * t
    if n:
        block_t = 32
        _pack_values_kernel[(triton.cdiv(n, block_t), d // g)](
            x, codes, scale, zero, n, d, NBITS=nbits, G=g, BLOCK_T=block_t)
    return codes, scale, zero


@triton.jit
def _kivi_attention_kernel(
    q_ptr, kc_ptr, ks_ptr, kz_ptr, vc_ptr, vs_ptr, vz_ptr, rk_ptr, rv_ptr, mask_ptr,
    m_out, l_out, acc_out,
    HKV, GROUP, Q, D, CAP, RCAP, N_QUANT, N_RES, TOKENS_PER_SPLIT, sm_scale,
    HAS_MASK: tl.constexpr, HALF_DOT: tl.constexpr, NBITS: tl.constexpr, G: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    bh, split = tl.program_id(0), tl.program_id(1)
    n_splits = tl.num_programs(1)
    F: tl.constexpr = 32 // NBITS
    CODE_MASK: tl.constexpr = (1 << NBITS) - 1
    b = bh // HKV
    h = bh % HKV
    n_total = N_QUANT + N_RES
    rows = tl.arange(0, BLOCK_M)
    n_rows = GROUP * Q
    rmask = rows < n_rows
    qi = rows % Q
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    # query rows of the GROUP heads sharing kv head h are contiguous: (b, h*GROUP .. , Q, D)
    q_base = q_ptr + (b.to(tl.int64) * HKV * GROUP + h * GROUP) * Q * D
    q = tl.load(q_base + rows[:, None] * D + d[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
    dot_ty = q.dtype if HALF_DOT else tl.float32
    q = (q.to(tl.float32) * sm_scale).to(dot_ty)

    bh64 = bh.to(tl.int64)
    kc_base = kc_ptr + bh64 * (CAP // F) * D
    km_base = bh64 * (CAP // G) * D
    vc_base = vc_ptr + bh64 * CAP * (D // F)
    vm_base = bh64 * CAP * (D // G)
    r_base = bh64 * RCAP * D

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    start = split * TOKENS_PER_SPLIT
    end = tl.minimum(start + TOKENS_PER_SPLIT, n_total)
    tok = tl.arange(0, G)
    for t0 in range(start, end, G):
        t = t0 + tok
        if t0 < N_QUANT:
            kw = tl.load(kc_base + (t // F)[:, None] * D + d[None, :], mask=dmask[None, :], other=0)
            kcode = ((kw >> ((t % F) * NBITS)[:, None]) & CODE_MASK).to(tl.float32)
            ks = tl.load(ks_ptr + km_base + (t0 // G) * D + d, mask=dmask, other=0.0).to(tl.float32)
            kz = tl.load(kz_ptr + km_base + (t0 // G) * D + d, mask=dmask, other=0.0).to(tl.float32)
            k = kcode * ks[None, :] + kz[None, :]
            vw = tl.load(vc_base + t[:, None] * (D // F) + (d // F)[None, :], mask=dmask[None, :], other=0)
            vcode = ((vw >> ((d % F) * NBITS)[None, :]) & CODE_MASK).to(tl.float32)
            vmeta = vm_base + t[:, None] * (D // G) + (d // G)[None, :]
            vs = tl.load(vs_ptr + vmeta, mask=dmask[None, :], other=0.0).to(tl.float32)
            vz = tl.load(vz_ptr + vmeta, mask=dmask[None, :], other=0.0).to(tl.float32)
            v = vcode * vs + vz
        else:
            r = t - N_QUANT
            rm = (r < N_RES)[:, None] & dmask[None, :]
            roff = r_base + r[:, None] * D + d[None, :]
            k = tl.load(rk_ptr + roff, mask=rm, other=0.0).to(tl.float32)
            v = tl.load(rv_ptr + roff, mask=rm, other=0.0).to(tl.float32)
        s = tl.dot(q, tl.trans(k.to(dot_ty)), input_precision="ieee")
        ok = rmask[:, None] & (t < end)[None, :]
        if HAS_MASK:
            mrow = (b * Q + qi).to(tl.int64) * n_total
            ok &= tl.load(mask_ptr + mrow[:, None] + t[None, :], mask=ok, other=0) != 0
        else:
            ok &= t[None, :] <= (n_total - Q + qi)[:, None]
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(dot_ty), v.to(dot_ty), input_precision="ieee")
        m_i = m_new
    part = bh64 * n_splits + split
    tl.store(m_out + part * BLOCK_M + rows, m_i)
    tl.store(l_out + part * BLOCK_M + rows, l_i)
    tl.store(acc_out + (part * BLOCK_M + rows)[:, None] * BLOCK_D + d[None, :], acc)


def _num_splits(n_tokens: int, n_programs: int, group_size: int, device: torch.device) -> int:
    """Flash-decoding split count: fill the GPU (about 4 programs per SM) without tiles of fewer than 256 tokens."""
    by_length = max(1, triton.cdiv(n_tokens, max(256, group_size)))
    if device.type != "cuda":
        return by_length
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(by_length, triton.cdiv(4 * sms, n_programs)))


def merge_splits(m: torch.Tensor, l: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
    """Merge per-split softmax partials ``m, l (..., S, M)``, ``acc (..., S, M, D)`` into ``(..., M, D)``."""
    m_max = m.amax(dim=-2, keepdim=True)
    w = torch.exp(m - torch.where(torch.isinf(m_max), 0.0, m_max))
    l_tot = (w * l).sum(dim=-2)
    out = (w.unsqueeze(-1) * acc).sum(dim=-3)
    return out / torch.where(l_tot > 0, l_tot, 1.0).unsqueeze(-1)


def kivi_attention(query, key_codes, key_scale, key_zero, value_codes, value_scale, value_zero,
                   residual_keys, residual_values, mask, n_quant, n_residual, scale, nbits, group_size):
    """Triton ``kivi_attention`` (contract: :func:`pydecode.ops.kivi.reference.kivi_attention`)."""
    b, hq, q_len, d = query.shape
    hkv = key_codes.shape[1]
    group = hq // hkv
    n_total = n_quant + n_residual
    block_m = max(16, triton.next_power_of_2(group * q_len))
    block_d = max(16, triton.next_power_of_2(d))
    splits = _num_splits(n_total, b * hkv, group_size, query.device)
    per_split = triton.cdiv(triton.cdiv(max(n_total, 1), splits), group_size) * group_size
    splits = triton.cdiv(max(n_total, 1), per_split)
    f32 = dict(dtype=torch.float32, device=query.device)
    m = torch.empty(b * hkv, splits, block_m, **f32)
    l = torch.empty_like(m)
    acc = torch.empty(b * hkv, splits, block_m, block_d, **f32)
    rk, rv = residual_keys.contiguous(), residual_values.contiguous()
    mask_arg = query if mask is None else mask.view(torch.uint8)
    # The interpreter's bf16 dot is wrong (triton 3.9): dot in float32 there.
    half_dot = launch_constants(HALF_DOT=(query.dtype != torch.float32, False))["HALF_DOT"]
    _kivi_attention_kernel[(b * hkv, splits)](
        query, key_codes, key_scale, key_zero, value_codes, value_scale, value_zero, rk, rv, mask_arg,
        m, l, acc, hkv, group, q_len, d, value_codes.shape[2], rk.shape[2], n_quant, n_residual, per_split, scale,
        HAS_MASK=mask is not None, HALF_DOT=half_dot, NBITS=nbits, G=group_size, BLOCK_M=block_m, BLOCK_D=block_d,
    )
    out = merge_splits(m, l, acc)[:, :group * q_len, :d]
    return out.reshape(b, hq, q_len, d).to(query.dtype)
