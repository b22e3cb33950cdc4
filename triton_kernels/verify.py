"""Speculative verification (semantics of ``pydecode.ops.verify.reference``): one program per row walks the drafts,
then draws the correction or bonus token with a blocked Gumbel-max over the vocabulary."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import custom_op

from ._jit import device_function, launch_constants
from ._random import gumbel, step_arg, step_key, token_bits


@device_function
def _clean(x):
    return tl.where(x != x, float("-inf"), x)  # NaN counts as -inf


@device_function
def _softmax_stats(row_ptr, V, BLOCK):
    """(max, sum of exp(x - max)) of a row of V float32 logits."""
    top = tl.full([], float("-inf"), tl.float32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        top = tl.maximum(top, tl.max(_clean(tl.load(row_ptr + offs, mask=offs < V, other=float("-inf"))), 0))
    total = tl.full([], 0.0, tl.float32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = _clean(tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")))
        total += tl.sum(tl.exp(x - top), 0)
    return top, total


@device_function
def _prob(row_ptr, token, top, total):
    x = _clean(tl.load(row_ptr + token))
    return tl.exp(x - top) / total


@device_function
def _argmax(row_ptr, V, BLOCK):
    best = tl.full([], float("-inf"), tl.float32)
    best_idx = tl.full([], 0, tl.int64)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = _clean(tl.load(row_ptr + offs, mask=offs < V, other=float("-inf")))
        block_best = tl.max(x, 0)
        block_idx = tl.argmax(x, 0, tie_break_left=True).to(tl.int64) + start
        better = block_best > best
        best_idx = tl.where(better, block_idx, best_idx)
        best = tl.where(better, block_best, best)
    return best_idx


@triton.jit
def _verify_kernel(draft_ptr, draft_logits_ptr, target_ptr, num_draft_ptr, temp_ptr, temp_val, seed_ptr, step,
                   accepted_ptr, next_ptr, K, V, HAS_DRAFT: tl.constexpr, TEMP_TENSOR: tl.constexpr,
                   BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    key = step_key(seed_ptr, b, step)
    n = tl.load(num_draft_ptr + b)
    if TEMP_TENSOR:
        greedy = tl.load(temp_ptr + b) <= 0.0
    else:
        greedy = tl.full([], temp_val, tl.float32) <= 0.0
    accepted = tl.full([], 0, tl.int64)
    still = tl.full([], 1, tl.int1)
    for j in range(0, K):
        row = target_ptr + (b * (K + 1) + j) * V
        x = tl.load(draft_ptr + b * K + j)
        if greedy:
            ok = _argmax(row, V, BLOCK) == x
        else:
            top, total = _softmax_stats(row, V, BLOCK)
            p = _prob(row, x, top, total)
            q = tl.full([], 1.0, tl.float32)
            if HAS_DRAFT:
                drow = draft_logits_ptr + (b * K + j) * V
                dtop, dtotal = _softmax_stats(drow, V, BLOCK)
                q = _prob(drow, x, dtop, dtotal)
            bits = token_bits(key, tl.full([], 0, tl.int32) + V + j)
            u = ((bits >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07
            ok = u * q < p
        still = still & ok & (j < n)
        accepted += still.to(tl.int64)
    tl.store(accepted_ptr + b, accepted)

    row = target_ptr + (b * (K + 1) + accepted) * V
    if greedy:
        tl.store(next_ptr + b, _argmax(row, V, BLOCK))
    else:
        rejected = accepted < n
        at = tl.minimum(accepted, K - 1)
        x = tl.load(draft_ptr + b * K + at)
        drow = draft_logits_ptr + (b * K + at) * V
        top, total = _softmax_stats(row, V, BLOCK)
        dtop = tl.full([], 0.0, tl.float32)
        dtotal = tl.full([], 1.0, tl.float32)
        if HAS_DRAFT:
            dtop, dtotal = _softmax_stats(drow, V, BLOCK)
        mass = tl.full([], 0.0, tl.float32)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            p = tl.exp(_clean(tl.load(row + offs, mask=offs < V, other=float("-inf"))) - top) / total
            if HAS_DRAFT:
                q = tl.exp(_clean(tl.load(drow + offs, mask=offs < V, other=float("-inf"))) - dtop) / dtotal
            else:
                q = tl.where(offs == x, 1.0, 0.0)
            mass += tl.sum(tl.maximum(p - q, 0.0), 0)
        use_residual = mass > 0.0
        best = tl.full([], float("-inf"), tl.float32)
        best_idx = tl.full([], 0, tl.int64)
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            logit = _clean(tl.load(row + offs, mask=offs < V, other=float("-inf")))
            p = tl.exp(logit - top) / total
            if HAS_DRAFT:
                q = tl.exp(_clean(tl.load(drow + offs, mask=offs < V, other=float("-inf"))) - dtop) / dtotal
            else:
                q = tl.where(offs == x, 1.0, 0.0)
            residual = tl.where(use_residual, tl.maximum(p - q, 0.0), p)
            score = tl.where(rejected, tl.log(residual), logit)
            noisy = tl.where((offs < V) & (score > float("-inf")), score + gumbel(key, offs), float("-inf"))
            block_best = tl.max(noisy, 0)
            block_idx = tl.argmax(noisy, 0, tie_break_left=True).to(tl.int64) + start
            better = block_best > best
            best_idx = tl.where(better, block_idx, best_idx)
            best = tl.where(better, block_best, best)
        tl.store(next_ptr + b, best_idx)


@custom_op("pydecode_triton::verify", mutates_args=())
def _verify_op(draft_tokens: torch.Tensor, draft_logits: torch.Tensor | None, target_logits: torch.Tensor,
               num_draft: torch.Tensor, temperature: torch.Tensor | None, temperature_val: float, seeds: torch.Tensor,
               step: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, k = draft_tokens.shape
    vocab = target_logits.shape[2]
    vocab_p2 = triton.next_power_of_2(vocab)
    accepted = torch.empty(batch, dtype=torch.int64, device=draft_tokens.device)
    next_tokens = torch.empty(batch, dtype=torch.int64, device=draft_tokens.device)
    if batch == 0:
        return accepted, next_tokens
    _verify_kernel[(batch,)](
        draft_tokens, draft_logits if draft_logits is not None else target_logits, target_logits, num_draft,
        temperature if temperature is not None else seeds, temperature_val, seeds, step_arg(step), accepted,
        next_tokens, k, vocab, HAS_DRAFT=draft_logits is not None, TEMP_TENSOR=temperature is not None,
        **launch_constants(BLOCK=(min(vocab_p2, 1024), min(vocab_p2, 4096))),
    )
    return accepted, next_tokens


@_verify_op.register_fake
def _(draft_tokens, draft_logits, target_logits, num_draft, temperature, temperature_val, seeds, step):
    batch = draft_tokens.shape[0]
    return num_draft.new_empty(batch), num_draft.new_empty(batch)


def verify(draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds, step):
    """``(accepted (B,) int64, next_tokens (B,) int64)``; ``temperature`` a float or a (B,) tensor."""
    tensor, value = ((temperature.float().contiguous(), 0.0) if isinstance(temperature, torch.Tensor)
                     else (None, float(temperature)))
    return _verify_op(draft_tokens.contiguous(), None if draft_logits is None else draft_logits.contiguous(),
                      target_logits.contiguous(), num_draft.contiguous(), tensor, value, seeds.contiguous(), int(step))
