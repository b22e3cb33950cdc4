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

With logprobs, the kernel then adds one log-sum-exp pass over the input row and one pass for the kept set's mass;
top-p rows first find the nucleus pivot exactly (radix select with mass histograms, one pass per key byte).

A greedy row (temperature 0) takes one argmax pass. Scalar parameters are compile-time: a disabled stage is not
compiled in. Top-k and top-p keep or drop a whole tie group at their pivot (the reference's tie rule). Differences
from the reference, at float boundaries only: the top-p mass sums run in a different order; min-p compares
``exp(x - m)`` with ``min_p`` instead of ``p / p_max``. A masked token is never drawn.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import custom_op

from ._jit import device_function, launch_constants
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
        shift = KEY_BITS - 8 * (d + 1)  # constexpr: static_range unrolls d
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
def _top_k_floor(row_ptr, V, t, k, TOP_K: tl.constexpr, KEY_BITS: tl.constexpr, BLOCK: tl.constexpr):
    """Pass 1: the k-th largest ``logit / T`` (-inf when top-k is off for the row)."""
    kth = tl.full([], float("-inf"), tl.float32)
    if TOP_K:
        if (k > 0) & (k < V):
            kth = tl.math.div_rn(_kth_largest(row_ptr, V, k.to(tl.int32), KEY_BITS, BLOCK), t)
    return kth


@device_function
def _draw_row(row_ptr, V, key, t, kth, p, min_p, TOP_P: tl.constexpr, MIN_P: tl.constexpr, BLOCK: tl.constexpr):
    """Sampling row: the Gumbel-max draw over the kept set, given the top-k floor (passes 2-3 of the docstring)."""
    neg_inf = float("-inf")
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
        # a row with nothing finite keeps token 0, as the reference's argmax over -inf; a row with a +inf logit
        # keeps its first one (the masses are NaN there: without this the loop would never end)
        done = (m == neg_inf) | (m == float("inf"))
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


@device_function
def _log_normalizer(row_ptr, V, BLOCK: tl.constexpr):
    """The row's max and ``log(sum(exp(x - max)))`` (NaN logits as -inf), online in one pass; a logprob is
    ``(x - max) - log_z``, which keeps the float32 ulps that ``x - (max + log_z)`` loses on large logits."""
    m = tl.full([], float("-inf"), tl.float32)
    z = tl.full([], 0.0, tl.float32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = _load(row_ptr, offs, V).to(tl.float32)
        x = tl.where(x == x, x, float("-inf"))  # again in float32: a 16-bit NaN can pass _load's check in its dtype
        m_new = tl.maximum(m, tl.max(x, 0))
        z = z * tl.where(m == m_new, 1.0, tl.exp(m - m_new)) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    return m, tl.log(z)


@device_function
def _top_p_floor(row_ptr, V, t, m, kth, p, KEY_BITS: tl.constexpr, SUB: tl.constexpr):
    """The top-p pivot as ``logit / T``: the largest value whose mass from the top (``exp(x - m)`` over the top-k
    set) reaches ``p`` times the set's mass; radix select on the order keys with 256-bin mass histograms, one pass
    per key byte. -inf when rounding leaves the total short of the target (keep all)."""
    bins = tl.arange(0, 256)
    prefix = tl.full([], 0, tl.uint32)
    remaining = 0.0
    found = True
    for d in tl.static_range(KEY_BITS // 8):
        shift = KEY_BITS - 8 * (d + 1)  # constexpr: static_range unrolls d
        hist = tl.zeros([256], dtype=tl.float32)
        for start in range(0, V, SUB):
            offs = start + tl.arange(0, SUB)
            raw = _load(row_ptr, offs, V)
            key = _order_key(raw, KEY_BITS)
            x = tl.math.div_rn(raw.to(tl.float32), t)
            mass = tl.where((x >= kth) & (x > float("-inf")), tl.exp(x - m), 0.0)
            if d > 0:
                mass = tl.where((key >> (shift + 8)) == prefix, mass, 0.0)
            byte = ((key >> shift) & 255).to(tl.int32)
            hist += tl.sum(tl.where(byte[:, None] == bins[None, :], mass[:, None], 0.0), 0)
        if d == 0:
            remaining = p * tl.sum(hist, 0)
        at_or_above = tl.sum(hist, 0) - tl.cumsum(hist, 0) + hist
        digit = tl.max(tl.where(at_or_above >= remaining, bins, -1), 0)
        found = found & (digit >= 0)
        digit = tl.maximum(digit, 0)
        remaining -= tl.sum(tl.where(bins > digit, hist, 0.0), 0)
        prefix = (prefix << 8) | digit.to(tl.uint32)
    pivot = tl.math.div_rn(_key_value(prefix, row_ptr.dtype.element_ty, KEY_BITS), t)
    return tl.where(found, pivot, float("-inf"))


@device_function
def _processed_log_mass(row_ptr, V, t, m, floor, min_p, MIN_P: tl.constexpr, BLOCK: tl.constexpr):
    """log of ``sum exp(x - m)`` over the kept set: ``x >= floor`` and, with min-p, ``exp(x - m) >= min_p``."""
    total = tl.full([], 0.0, tl.float32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.math.div_rn(_load(row_ptr, offs, V).to(tl.float32), t)
        e = tl.exp(x - m)
        kept = (x >= floor) & (x > float("-inf"))
        if MIN_P:
            kept = kept & (e >= min_p)
        total += tl.sum(tl.where(kept, e, 0.0), 0)
    return tl.log(total)


@triton.jit
def _sample_kernel(
    logits_ptr, out_ptr, logprob_ptr, processed_ptr, seed_ptr, step, V, stride,
    t_ptr, t_val, k_ptr, k_val, p_ptr, p_val, minp_ptr, minp_val,
    T_TENSOR: tl.constexpr, K_TENSOR: tl.constexpr, P_TENSOR: tl.constexpr, MINP_TENSOR: tl.constexpr,
    GREEDY: tl.constexpr, SAMPLING: tl.constexpr, TOP_K: tl.constexpr, TOP_P: tl.constexpr, MIN_P: tl.constexpr,
    WITH_LOGPROBS: tl.constexpr, KEY_BITS: tl.constexpr, BLOCK: tl.constexpr, SUB: tl.constexpr,
):
    row = tl.program_id(0)
    row_ptr = logits_ptr + row.to(tl.int64) * stride
    t = _row_param(t_ptr, row, t_val, tl.float32, T_TENSOR)
    p = _row_param(p_ptr, row, p_val, tl.float32, P_TENSOR)
    min_p = _row_param(minp_ptr, row, minp_val, tl.float32, MINP_TENSOR)
    token = row * 0
    kth = tl.full([], float("-inf"), tl.float32)
    if GREEDY:
        if t <= 0:
            token = _argmax_row(row_ptr, V, BLOCK)
    if SAMPLING:
        if t > 0:
            kth = _top_k_floor(row_ptr, V, t, _row_param(k_ptr, row, k_val, tl.int64, K_TENSOR), TOP_K, KEY_BITS,
                               BLOCK)
            token = _draw_row(row_ptr, V, step_key(seed_ptr, row, step), t, kth, p, min_p, TOP_P, MIN_P, BLOCK)
    tl.store(out_ptr + row, token.to(tl.int64))
    if WITH_LOGPROBS:
        raw_max, log_z = _log_normalizer(row_ptr, V, BLOCK)
        x_raw = tl.load(row_ptr + token).to(tl.float32)
        logprob = (tl.where(x_raw == x_raw, x_raw, float("-inf")) - raw_max) - log_z
        processed = logprob
        if SAMPLING:
            if t > 0:
                m = tl.math.div_rn(raw_max, t)  # the max of logit / T (the division is monotone)
                floor = kth
                if TOP_P:
                    if p < 1.0:
                        floor = tl.maximum(floor, _top_p_floor(row_ptr, V, t, m, kth, p, KEY_BITS, SUB))
                log_mass = _processed_log_mass(row_ptr, V, t, m, floor, min_p, MIN_P, BLOCK)
                processed = (_scaled(row_ptr, token, t) - m) - log_mass
                bad = (raw_max == float("-inf")) | (raw_max == float("inf"))
                processed = tl.where(bad, float("nan"), processed)
                logprob = tl.where(bad, float("nan"), logprob)
        tl.store(logprob_ptr + row, logprob)
        tl.store(processed_ptr + row, processed)


def _split(value, kind):
    """(tensor or None, scalar) for a scalar-or-(B,) parameter."""
    return (value, kind(0)) if isinstance(value, torch.Tensor) else (None, kind(value))


def _launch(logits, seeds, step, params, with_logprobs):
    """Run the kernel; returns (tokens, logprob, processed_logprob) (the last two empty without logprobs)."""
    t_tensor, t_value, k_tensor, k_value, p_tensor, p_value, minp_tensor, minp_value = params
    batch, vocab = logits.shape
    out = torch.empty(batch, dtype=torch.int64, device=logits.device)
    logprob = torch.empty(batch if with_logprobs else 0, dtype=torch.float32, device=logits.device)
    processed = torch.empty_like(logprob)
    if batch == 0:
        return out, logprob, processed
    dummy = seeds
    _sample_kernel[(batch,)](
        logits, out, logprob if with_logprobs else dummy, processed if with_logprobs else dummy, seeds,
        step_arg(step), vocab, logits.stride(0),
        dummy if t_tensor is None else t_tensor, float(t_value), dummy if k_tensor is None else k_tensor,
        min(int(k_value), vocab), dummy if p_tensor is None else p_tensor, float(p_value),
        dummy if minp_tensor is None else minp_tensor, float(minp_value),
        T_TENSOR=t_tensor is not None, K_TENSOR=k_tensor is not None, P_TENSOR=p_tensor is not None,
        MINP_TENSOR=minp_tensor is not None, GREEDY=t_tensor is not None or t_value <= 0,
        SAMPLING=t_tensor is not None or t_value > 0, TOP_K=k_tensor is not None or 0 < k_value < vocab,
        TOP_P=p_tensor is not None or p_value < 1.0, MIN_P=minp_tensor is not None or minp_value > 0.0,
        WITH_LOGPROBS=with_logprobs, KEY_BITS=_KEY_BITS[logits.dtype],
        **launch_constants(BLOCK=(2048, 16384), SUB=(128, 1024)), num_warps=8,
    )
    return out, logprob, processed


@custom_op("pydecode_triton::top_k_top_p_sample", mutates_args=())
def _sample_op(logits: torch.Tensor, seeds: torch.Tensor, step: int,
               t_tensor: torch.Tensor | None, t_value: float, k_tensor: torch.Tensor | None, k_value: int,
               p_tensor: torch.Tensor | None, p_value: float, minp_tensor: torch.Tensor | None,
               minp_value: float) -> torch.Tensor:
    params = (t_tensor, t_value, k_tensor, k_value, p_tensor, p_value, minp_tensor, minp_value)
    return _launch(logits, seeds, step, params, with_logprobs=False)[0]


@_sample_op.register_fake
def _(logits, seeds, step, *params):
    return logits.new_empty(logits.shape[0], dtype=torch.int64)


@custom_op("pydecode_triton::top_k_top_p_sample_logprobs", mutates_args=())
def _sample_logprobs_op(logits: torch.Tensor, seeds: torch.Tensor, step: int,
                        t_tensor: torch.Tensor | None, t_value: float, k_tensor: torch.Tensor | None, k_value: int,
                        p_tensor: torch.Tensor | None, p_value: float, minp_tensor: torch.Tensor | None,
                        minp_value: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    params = (t_tensor, t_value, k_tensor, k_value, p_tensor, p_value, minp_tensor, minp_value)
    return _launch(logits, seeds, step, params, with_logprobs=True)


@_sample_logprobs_op.register_fake
def _(logits, seeds, step, *params):
    batch = logits.shape[0]
    return (logits.new_empty(batch, dtype=torch.int64), logits.new_empty(batch, dtype=torch.float32),
            logits.new_empty(batch, dtype=torch.float32))


def _params(temperature, top_k, top_p, min_p):
    return (*_split(temperature, float), *_split(top_k, int), *_split(top_p, float), *_split(min_p, float))


def top_k_top_p_sample(logits, temperature, top_k, top_p, min_p, seeds, step) -> torch.Tensor:
    """Draw one token per row of ``logits`` (B, V) fp32/fp16/bf16; see the module docstring. Returns (B,) int64.

    ``temperature``, ``top_k``, ``top_p``, ``min_p``: a Python scalar or a (B,) tensor each; ``seeds`` (B,) int64 and
    ``step`` pick the counter-based random stream shared with the reference.
    """
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return _sample_op(logits, seeds, int(step), *_params(temperature, top_k, top_p, min_p))


def top_k_top_p_sample_logprobs(logits, temperature, top_k, top_p, min_p, seeds, step):
    """:func:`top_k_top_p_sample` and the drawn token's ``(logprob, processed_logprob)``, (B,) float32 each."""
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return _sample_logprobs_op(logits, seeds, int(step), *_params(temperature, top_k, top_p, min_p))
