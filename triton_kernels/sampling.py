"""Fused temperature -> top-k -> top-p -> min-p -> Gumbel-max sampler: one program per row, no sort.

Passes over the row's vocabulary (blocks of ``BLOCK`` tokens), for a sampling row:

1. top-k (when on): radix select of the exact k-th largest logit on its order-preserving integer key, 8 bits per
   pass (2 passes for fp16/bf16 logits, 4 for fp32). Ties with the k-th value are kept, as in the reference.
2. one pass: row max ``m``, ``Z = sum exp(x - m)`` over the top-k set (online), and the Gumbel-max candidate
   ``w = argmax(x + g)`` over that set, where ``x = logit / T``.
3. top-p / min-p (when on), by candidate rejection: the kept set is ``{x >= pivot}`` for an unknown pivot, so the
   candidate is the answer when its own value is kept. min-p is checked without a pass (``exp(x_w - m) >= min_p``);
   top-p needs one pass for ``S = sum exp(x - m)`` over ``x > x_w`` (kept iff ``S < top_p * Z``), and the same pass
   finds the next candidate ``argmax(x + g)`` over ``x > x_w``, used when ``w`` is rejected. Every rejection removes
   the candidate and everything below it, so the loop ends (the row max is always kept); a candidate is rejected
   with probability about the mass outside the kept set, so this is usually 1-2 passes.

A greedy row (temperature 0) takes one argmax pass. Scalar parameters are compile-time: a disabled stage is not
compiled in. Differences from the reference, at float boundaries only: top-p keeps or drops a whole tie group at the
pivot (the reference's unstable sort may split it), and its mass sums run in a different order; min-p compares
``exp(x - m)`` with ``min_p`` instead of ``p / p_max``. A masked token is never drawn.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import custom_op

from ._jit import INTERPRET, device_function
from ._random import gumbel, step_arg, step_key

_KEY_BITS = {torch.float32: 32, torch.float16: 16, torch.bfloat16: 16}


@device_function
def _load(row_ptr, offs, V):
    """The block's logits in their own dtype, NaN and padding as -inf."""
    raw = tl.load(row_ptr + offs, mask=offs < V, other=float("-inf"))
    return tl.where(raw == raw, raw, float("-inf"))


@device_function
def _order_key(raw, KEY_BITS: tl.constexpr):
    """uint32 key of a float whose unsigned order is the float order."""
    if KEY_BITS == 16:
        u = raw.to(tl.uint16, bitcast=True).to(tl.uint32)
    else:
        u = raw.to(tl.uint32, bitcast=True)
    sign_bit: tl.constexpr = 1 << (KEY_BITS - 1)
    all_bits: tl.constexpr = (1 << KEY_BITS) - 1
    return tl.where((u & sign_bit) != 0, u ^ all_bits, u | sign_bit)


@device_function
def _key_value(key, dtype: tl.constexpr, KEY_BITS: tl.constexpr):
    """float32 value of an order key (inverse of :func:`_order_key`)."""
    sign_bit: tl.constexpr = 1 << (KEY_BITS - 1)
    all_bits: tl.constexpr = (1 << KEY_BITS) - 1
    u = tl.where((key & sign_bit) != 0, key ^ sign_bit, key ^ all_bits)
    if KEY_BITS == 16:
        return u.to(tl.uint16).to(dtype, bitcast=True).to(tl.float32)
    return u.to(tl.float32, bitcast=True)


@device_function
def _kth_largest(row_ptr, V, k, KEY_BITS: tl.constexpr, BLOCK: tl.constexpr):
    """The row's k-th largest logit (float32, counted with multiplicity) by radix select, one pass per byte."""
    bins = tl.arange(0, 256)
    prefix = (k * 0).to(tl.uint32)
    remaining = k
    matched = V  # tokens whose key starts with ``prefix``
    for d in tl.static_range(KEY_BITS // 8):
        shift: tl.constexpr = KEY_BITS - 8 * (d + 1)
        hist = tl.zeros([256], dtype=tl.int32)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            key = _order_key(_load(row_ptr, offs, V), KEY_BITS)
            match = offs < V
            if d > 0:
                match = match & ((key >> (shift + 8)) == prefix)
            hist += tl.histogram(tl.where(match, (key >> shift) & 255, 0).to(tl.int32), 256)
        # the other tokens (and the padding) went to bin 0: no histogram mask before triton 3.4
        hist -= tl.where(bins == 0, tl.cdiv(V, BLOCK) * BLOCK - matched, 0)
        at_or_above = matched - tl.cumsum(hist, 0) + hist
        digit = tl.max(tl.where(at_or_above >= remaining, bins, 0), 0)
        remaining -= tl.sum(tl.where(bins > digit, hist, 0), 0)
        matched = tl.sum(tl.where(bins == digit, hist, 0), 0)
        prefix = (prefix << 8) | digit.to(tl.uint32)
    return _key_value(prefix, row_ptr.dtype.element_ty, KEY_BITS)


@device_function
def _better(best_s, best_i, s, start):
    """Fold the block starting at token ``start`` into the running argmax of ``s`` (first index on ties)."""
    blk, i = tl.max(s, 0, return_indices=True, return_indices_tie_break_left=True)
    win = blk > best_s
    return tl.where(win, blk, best_s), tl.where(win, start + i, best_i)


@device_function
def _scaled(row_ptr, token, t):
    """float32 ``logit / T`` of one token (NaN as -inf)."""
    x = tl.load(row_ptr + token).to(tl.float32)
    return tl.math.div_rn(tl.where(x == x, x, float("-inf")), t)


@device_function
def _row_param(ptr, row, value, dtype: tl.constexpr, IS_TENSOR: tl.constexpr):
    """``ptr[row]`` when the parameter is a per-row tensor, else the scalar ``value``, as ``dtype``."""
    if IS_TENSOR:
        return tl.load(ptr + row).to(dtype)
    return tl.full([], value, dtype)


@device_function
def _argmax_row(row_ptr, V, BLOCK: tl.constexpr):
    """Greedy: first index of the row's largest logit (0 when nothing is finite)."""
    best = float("-inf")
    token = 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = _load(row_ptr, offs, V).to(tl.float32)
        best, token = _better(best, token, x, start)
    return token


@device_function
def _draw_row(row_ptr, V, key, t, k, p, min_p,
              TOP_K: tl.constexpr, TOP_P: tl.constexpr, MIN_P: tl.constexpr, KEY_BITS: tl.constexpr,
              BLOCK: tl.constexpr):
    """Sampling row: the Gumbel-max draw over the kept set (passes 1-3 of the module docstring)."""
    neg_inf = float("-inf")
    kth = neg_inf
    if TOP_K:
        if (k > 0) & (k < V):
            kth = tl.math.div_rn(_kth_largest(row_ptr, V, k.to(tl.int32), KEY_BITS, BLOCK), t)
    m = neg_inf
    z = 0.0
    best = neg_inf
    token = 0
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.math.div_rn(_load(row_ptr, offs, V).to(tl.float32), t)
        kept = (x >= kth) & (x > neg_inf)
        if TOP_P or MIN_P:
            m_new = tl.maximum(m, tl.max(tl.where(kept, x, neg_inf), 0))
            z = z * tl.where(m == m_new, 1.0, tl.exp(m - m_new))
            z += tl.sum(tl.where(kept, tl.exp(x - m_new), 0.0), 0)
            m = m_new
        best, token = _better(best, token, tl.where(kept, x + gumbel(key, offs), neg_inf), start)
    x_w = _scaled(row_ptr, token, t)
    if TOP_P or MIN_P:
        # a row with nothing finite keeps token 0, as the reference's argmax over -inf
        done = m == neg_inf
        if not TOP_P:
            done = done | (tl.exp(x_w - m) >= min_p)
        while not done:
            above = 0.0
            best = neg_inf
            nxt = token
            for start in range(0, V, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                x = tl.math.div_rn(_load(row_ptr, offs, V).to(tl.float32), t)
                higher = x > x_w
                if TOP_P:
                    above += tl.sum(tl.where(higher, tl.exp(x - m), 0.0), 0)
                best, nxt = _better(best, nxt, tl.where(higher, x + gumbel(key, offs), neg_inf), start)
            done = (tl.exp(x_w - m) >= min_p) & ((p >= 1.0) | (above < p * z))
            token = tl.where(done, token, nxt)
            x_w = tl.where(done, x_w, _scaled(row_ptr, nxt, t))
    return token


@triton.jit
def _sample_kernel(
    logits_ptr, out_ptr, seed_ptr, step, V, stride,
    t_ptr, t_val, k_ptr, k_val, p_ptr, p_val, minp_ptr, minp_val,
    T_TENSOR: tl.constexpr, K_TENSOR: tl.constexpr, P_TENSOR: tl.constexpr, MINP_TENSOR: tl.constexpr,
    GREEDY: tl.constexpr, SAMPLING: tl.constexpr, TOP_K: tl.constexpr, TOP_P: tl.constexpr, MIN_P: tl.constexpr,
    KEY_BITS: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    row_ptr = logits_ptr + row.to(tl.int64) * stride
    t = _row_param(t_ptr, row, t_val, tl.float32, T_TENSOR)
    token = row * 0
    if GREEDY:
        if t <= 0:
            token = _argmax_row(row_ptr, V, BLOCK)
    if SAMPLING:
        if t > 0:
            token = _draw_row(
                row_ptr, V, step_key(seed_ptr, row, step), t,
                _row_param(k_ptr, row, k_val, tl.int64, K_TENSOR),
                _row_param(p_ptr, row, p_val, tl.float32, P_TENSOR),
                _row_param(minp_ptr, row, minp_val, tl.float32, MINP_TENSOR),
                TOP_K, TOP_P, MIN_P, KEY_BITS, BLOCK,
            )
    tl.store(out_ptr + row, token.to(tl.int64))


def _split(value, kind):
    """(tensor or None, scalar) for a scalar-or-(B,) parameter."""
    return (value, kind(0)) if isinstance(value, torch.Tensor) else (None, kind(value))


@custom_op("pydecode_triton::top_k_top_p_sample", mutates_args=())
def _sample_op(logits: torch.Tensor, seeds: torch.Tensor, step: int,
               t_tensor: torch.Tensor | None, t_value: float, k_tensor: torch.Tensor | None, k_value: int,
               p_tensor: torch.Tensor | None, p_value: float, minp_tensor: torch.Tensor | None,
               minp_value: float) -> torch.Tensor:
    batch, vocab = logits.shape
    out = torch.empty(batch, dtype=torch.int64, device=logits.device)
    if batch == 0:
        return out
    dummy = seeds
    greedy = t_tensor is not None or t_value <= 0
    _sample_kernel[(batch,)](
        logits, out, seeds, step_arg(step), vocab, logits.stride(0),
        dummy if t_tensor is None else t_tensor, float(t_value), dummy if k_tensor is None else k_tensor,
        min(int(k_value), vocab), dummy if p_tensor is None else p_tensor, float(p_value),
        dummy if minp_tensor is None else minp_tensor, float(minp_value),
        T_TENSOR=t_tensor is not None, K_TENSOR=k_tensor is not None, P_TENSOR=p_tensor is not None,
        MINP_TENSOR=minp_tensor is not None, GREEDY=greedy, SAMPLING=t_tensor is not None or t_value > 0,
        TOP_K=k_tensor is not None or 0 < k_value < vocab, TOP_P=p_tensor is not None or p_value < 1.0,
        MIN_P=minp_tensor is not None or minp_value > 0.0, KEY_BITS=_KEY_BITS[logits.dtype],
        BLOCK=16384 if INTERPRET else 2048, num_warps=8,
    )
    return out


@_sample_op.register_fake
def _(logits, seeds, step, *params):
    return logits.new_empty(logits.shape[0], dtype=torch.int64)


def top_k_top_p_sample(logits, temperature, top_k, top_p, min_p, seeds, step) -> torch.Tensor:
    """Draw one token per row of ``logits`` (B, V) fp32/fp16/bf16; see the module docstring. Returns (B,) int64.

    ``temperature``, ``top_k``, ``top_p``, ``min_p``: a Python scalar or a (B,) tensor each; ``seeds`` (B,) int64 and
    ``step`` pick the counter-based random stream shared with the reference.
    """
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return _sample_op(logits, seeds, int(step), *_split(temperature, float), *_split(top_k, int), *_split(top_p, float),
                      *_split(min_p, float))
