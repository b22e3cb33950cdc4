"""Beam top-k in Triton: per-row top-k by value with an online log-sum-exp, then a per-item merge.

Candidates travel as int64 keys ``(order-preserving float bits << 32) | (2**32 - 1 - index)``: comparing keys
compares scores, and equal scores put the smaller index first. Stage 1 (one program per row) walks the vocabulary
in tiles with an online max / sum of exp and merges each tile into the row's running best KP keys (a row's offset
is the same for all its tokens, so its best by value hold all its candidates that can make the top k). Stage 2
(one program per batch item) rescores each row's keys with the row's offset (``- max - log-sum-exp + beam score``)
and merges the rows the same way. Nothing is sorted.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

PAD = tl.constexpr(-(2**63))  # below every real key (a constexpr: kernels may read no other global)


@triton.jit
def _pack(x, index):
    bits = tl.where(x == 0.0, 0, x.to(tl.int32, bitcast=True))  # -0.0 packs as +0.0: they compare equal
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return (ordered.to(tl.int64) << 32) | (0xFFFFFFFF - index.to(tl.int64))


@triton.jit
def _unpack(key):
    ordered = (key >> 32).to(tl.int32)
    bits = tl.where(ordered < 0, ordered ^ 0x7FFFFFFF, ordered)
    return bits.to(tl.float32, bitcast=True), 0xFFFFFFFF - (key & 0xFFFFFFFF)


@triton.jit
def _offer(best, keys, KP: tl.constexpr):
    """Keep in ``best`` (KP keys, any order) the KP largest of ``best`` and ``keys``.

    Only keys above the current minimum can enter, so a tile costs one compare-and-count once the best fill up;
    each entering key replaces the minimum (keys are unique, apart from PAD)."""
    slots = tl.arange(0, KP)
    entering = tl.minimum(tl.sum((keys > tl.min(best, 0)).to(tl.int32), 0), KP)
    for _ in range(entering):
        top = tl.max(keys, 0)
        low = tl.min(best, 0)
        first_low = tl.min(tl.where(best == low, slots, KP), 0)
        best = tl.where((slots == first_low) & (top > low), top, best)
        keys = tl.where(keys == top, PAD, keys)
    return best


@triton.jit
def _row_topk_kernel(logits_ptr, keys_ptr, stats_ptr, V, KP: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    row_ptr = logits_ptr + row.to(tl.int64) * V
    neg_inf = float("-inf")
    m = tl.full([], neg_inf, tl.float32)
    s = tl.full([], 0.0, tl.float32)
    best = tl.full([KP], PAD, tl.int64)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        inside = offs < V
        x = tl.load(row_ptr + offs, mask=inside, other=neg_inf)
        x = tl.where(x == x, x, neg_inf)
        m_new = tl.maximum(m, tl.max(x, 0))
        scale = tl.where(m == m_new, 1.0, tl.exp(m - m_new))
        s = s * scale + tl.sum(tl.where(x > neg_inf, tl.exp(x - m_new), 0.0), 0)
        m = m_new
        best = _offer(best, tl.where(inside, _pack(x, offs), PAD), KP)
    tl.store(keys_ptr + row.to(tl.int64) * KP + tl.arange(0, KP), best)
    tl.store(stats_ptr + 2 * row, m)
    tl.store(stats_ptr + 2 * row + 1, tl.log(s))


@triton.jit
def _merge_kernel(keys_ptr, stats_ptr, beam_scores_ptr, scores_ptr, tokens_ptr, beams_ptr, V, num_beams, k,
                  KP: tl.constexpr, KM: tl.constexpr, LOG_SOFTMAX: tl.constexpr):
    item = tl.program_id(0)
    neg_inf = float("-inf")
    offs = tl.arange(0, KM)
    best = tl.full([KM], PAD, tl.int64)
    for j in range(0, num_beams):
        row = item * num_beams + j
        keys = tl.load(keys_ptr + row.to(tl.int64) * KP + offs, mask=offs < KP, other=PAD)
        x, token = _unpack(keys)
        if LOG_SOFTMAX:
            x = (x - tl.load(stats_ptr + 2 * row)) - tl.load(stats_ptr + 2 * row + 1)
        score = x + tl.load(beam_scores_ptr + row)
        score = tl.where(score == score, score, neg_inf) + 0.0
        keys = tl.where(keys == PAD, PAD, _pack(score, j * V + token))
        best = _offer(best, keys, KM)
    ranked = tl.full([KM], PAD, tl.int64)
    for i in range(0, KM):  # descending order: KM rounds of max, once per batch item
        top = tl.max(best, 0)
        ranked = tl.where(offs == i, top, ranked)
        best = tl.where(best == top, PAD, best)
    score, flat = _unpack(ranked)
    out = item.to(tl.int64) * k + offs
    keep = offs < k
    tl.store(scores_ptr + out, score, mask=keep)
    tl.store(tokens_ptr + out, flat % V, mask=keep)
    tl.store(beams_ptr + out, flat // V, mask=keep)


def beam_topk(logits: torch.Tensor, beam_scores: torch.Tensor, num_beams: int, k: int, log_softmax: bool = True):
    """Triton backend of :func:`pydecode.ops.beam_topk.beam_topk` (same contract, float32 internally)."""
    logits = logits.to(torch.float32).contiguous()
    beam_scores = beam_scores.to(torch.float32).contiguous()
    rows, vocab = logits.shape
    batch = rows // num_beams
    kp = triton.next_power_of_2(min(k, vocab))
    km = triton.next_power_of_2(k)
    block = max(kp, min(1024, triton.next_power_of_2(vocab)))
    keys = torch.empty(rows, kp, dtype=torch.int64, device=logits.device)
    stats = torch.empty(rows, 2, dtype=torch.float32, device=logits.device)
    _row_topk_kernel[(rows,)](logits, keys, stats, vocab, KP=kp, BLOCK=block)
    scores = torch.empty(batch, k, dtype=torch.float32, device=logits.device)
    tokens = torch.empty(batch, k, dtype=torch.int64, device=logits.device)
    beams = torch.empty(batch, k, dtype=torch.int64, device=logits.device)
    _merge_kernel[(batch,)](keys, stats, beam_scores, scores, tokens, beams, vocab, num_beams, k, KP=kp, KM=km,
                            LOG_SOFTMAX=bool(log_softmax))
    return scores, tokens, beams
