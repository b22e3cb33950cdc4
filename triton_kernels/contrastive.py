"""Degeneration scoring of contrastive search (semantics of ``pydecode.ops.degeneration.reference``).

Two kernels: ``_partial_kernel`` on a (context chunks, rows) grid writes each chunk's max cosine similarity per
candidate (B, chunks, K), so a single 32k-token row spreads over many programs; ``_finish_kernel`` (one program per
row) takes the max over chunks, combines it with the candidate probabilities and writes the scores and the argmax.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import custom_op

from ._jit import launch_constants


@triton.jit
def _partial_kernel(cand_ptr, ctx_ptr, mask_ptr, partial_ptr, K, S, H, ctx_stride, mask_stride, n_chunks,
                    HAS_MASK: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_H: tl.constexpr):
    chunk = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    rows = chunk * BLOCK_S + tl.arange(0, BLOCK_S)
    valid = rows < S
    if HAS_MASK:
        valid = valid & (tl.load(mask_ptr + b * mask_stride + rows, mask=rows < S, other=0) != 0)
    row_ptr = ctx_ptr + b * ctx_stride + rows.to(tl.int64)[:, None] * H
    inv_norm = tl.full([BLOCK_S], 1.0, tl.float32)
    if NORMALIZE:
        sq = tl.zeros([BLOCK_S], tl.float32)
        for h0 in range(0, H, BLOCK_H):
            hs = h0 + tl.arange(0, BLOCK_H)
            x = tl.load(row_ptr + hs[None, :], mask=valid[:, None] & (hs < H)[None, :], other=0.0).to(tl.float32)
            sq += tl.sum(x * x, 1)
        inv_norm = 1.0 / tl.sqrt(tl.where(valid, sq, 1.0))  # masked rows: no 1/0
    for j in range(K):
        cand = cand_ptr + (b * K + j) * H
        dot = tl.zeros([BLOCK_S], tl.float32)
        cand_sq = tl.zeros([BLOCK_H], tl.float32)
        for h0 in range(0, H, BLOCK_H):
            hs = h0 + tl.arange(0, BLOCK_H)
            c = tl.load(cand + hs, mask=hs < H, other=0.0).to(tl.float32)
            x = tl.load(row_ptr + hs[None, :], mask=valid[:, None] & (hs < H)[None, :], other=0.0).to(tl.float32)
            dot += tl.sum(x * c[None, :], 1)
            cand_sq += c * c
        cosine = tl.where(valid, dot * inv_norm / tl.sqrt(tl.sum(cand_sq, 0)), float("-inf"))
        tl.store(partial_ptr + (b * n_chunks + chunk) * K + j, tl.max(cosine, 0))


@triton.jit
def _finish_kernel(partial_ptr, probs_ptr, alpha_ptr, alpha_val, scores_ptr, best_ptr, K, n_chunks,
                   ALPHA_TENSOR: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    ks = tl.arange(0, BLOCK_K)
    k_ok = ks < K
    penalty = tl.full([BLOCK_K], float("-inf"), tl.float32)
    for c0 in range(0, n_chunks, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        part = tl.load(partial_ptr + (b * n_chunks + cs[:, None]) * K + ks[None, :],
                       mask=(cs < n_chunks)[:, None] & k_ok[None, :], other=float("-inf"))
        penalty = tl.maximum(penalty, tl.max(part, 0))
    penalty = tl.where(penalty == float("-inf"), 0.0, penalty)
    if ALPHA_TENSOR:
        alpha = tl.load(alpha_ptr + b).to(tl.float32)
    else:
        alpha = tl.full([], alpha_val, tl.float32)
    probs = tl.load(probs_ptr + b * K + ks, mask=k_ok, other=0.0)
    scores = (1.0 - alpha) * probs - alpha * penalty
    tl.store(scores_ptr + b * K + ks, scores, mask=k_ok)
    best = tl.argmax(tl.where(k_ok, scores, float("-inf")), 0, tie_break_left=True)
    tl.store(best_ptr + b, best.to(tl.int64))


@custom_op("pydecode_triton::degeneration_score", mutates_args=())
def _degeneration_op(candidates: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None,
                     probs: torch.Tensor, alpha: torch.Tensor | None, alpha_val: float,
                     normalize_context: bool) -> tuple[torch.Tensor, torch.Tensor]:
    batch, k, hidden = candidates.shape
    seq = context.shape[1]
    hidden_p2 = triton.next_power_of_2(hidden)
    blocks = launch_constants(BLOCK_S=(32, 64), BLOCK_H=(min(hidden_p2, 128), min(hidden_p2, 1024)))
    n_chunks = triton.cdiv(seq, blocks["BLOCK_S"])
    partial = torch.empty(batch, n_chunks, k, dtype=torch.float32, device=candidates.device)
    scores = torch.empty(batch, k, dtype=torch.float32, device=candidates.device)
    best = torch.empty(batch, dtype=torch.int64, device=candidates.device)
    if batch == 0:
        return best, scores
    mask = context_mask if context_mask is not None else best
    if n_chunks > 0:
        _partial_kernel[(n_chunks, batch)](
            candidates, context, mask, partial, k, seq, hidden, context.stride(0),
            mask.stride(0) if context_mask is not None else 0, n_chunks,
            HAS_MASK=context_mask is not None, NORMALIZE=normalize_context, **blocks, num_warps=4,
        )
    _finish_kernel[(batch,)](
        partial, probs, alpha if alpha is not None else probs, alpha_val, scores, best, k, n_chunks,
        ALPHA_TENSOR=alpha is not None, BLOCK_C=min(triton.next_power_of_2(max(n_chunks, 1)), 64),
        BLOCK_K=triton.next_power_of_2(k),
    )
    return best, scores


@_degeneration_op.register_fake
def _(candidates, context, context_mask, probs, alpha, alpha_val, normalize_context):
    batch, k, _ = candidates.shape
    return probs.new_empty(batch, dtype=torch.int64), probs.new_empty(batch, k, dtype=torch.float32)


def degeneration_score(candidates, context, context_mask, probs, alpha, normalize_context=True):
    """``(best (B,) int64, scores (B, K) float32)``; ``alpha`` a float or a (B,) tensor (see the reference)."""
    hidden = candidates.shape[-1]
    if context.stride(2) != 1 or (context.shape[1] > 1 and context.stride(1) != hidden):
        context = context.contiguous()
    if context_mask is not None and context_mask.stride(1) != 1:
        context_mask = context_mask.contiguous()
    tensor, value = (alpha.float().contiguous(), 0.0) if isinstance(alpha, torch.Tensor) else (None, float(alpha))
    return _degeneration_op(candidates.contiguous(), context, context_mask, probs.contiguous(), tensor, value,
                            bool(normalize_context))
