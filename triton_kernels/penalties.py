"""Repetition / frequency / presence penalties on float32 logits, in place, and the per-row token counts they read.

Semantics of ``pydecode.ops.penalties.reference``: repetition (transformers) divides a seen token's positive logit by
the penalty and multiplies a negative one, where seen = in the prompt or generated; then
``logit -= frequency * count + presence * (count > 0)`` (OpenAI) over generated tokens. Grid: (rows, vocab blocks);
a row whose three penalties are off returns at once.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import custom_op

from ._jit import device_function, launch_constants


@device_function
def _row_param(ptr, row, value, IS_TENSOR: tl.constexpr):
    """float32 ``ptr[row]`` for a per-row tensor, else the scalar ``value``."""
    if IS_TENSOR:
        return tl.load(ptr + row).to(tl.float32)
    return tl.full([], value, tl.float32)


@triton.jit
def _penalties_kernel(
    logits_ptr, counts_ptr, prompt_ptr, V,
    rep_ptr, rep_val, freq_ptr, freq_val, pres_ptr, pres_val,
    REP_TENSOR: tl.constexpr, FREQ_TENSOR: tl.constexpr, PRES_TENSOR: tl.constexpr, HAS_PROMPT: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    rep = _row_param(rep_ptr, row, rep_val, REP_TENSOR)
    freq = _row_param(freq_ptr, row, freq_val, FREQ_TENSOR)
    pres = _row_param(pres_ptr, row, pres_val, PRES_TENSOR)
    if (rep != 1.0) | (freq != 0.0) | (pres != 0.0):
        offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < V
        base = row.to(tl.int64) * V
        x = tl.load(logits_ptr + base + offs, mask=mask, other=0.0)
        count = tl.load(counts_ptr + base + offs, mask=mask, other=0)
        generated = count > 0
        seen = generated
        if HAS_PROMPT:
            seen = seen | (tl.load(prompt_ptr + base + offs, mask=mask, other=0) != 0)
        penalised = tl.where(x < 0, x * rep, tl.math.div_rn(x, rep))
        x = tl.where(seen, penalised, x)  # rep == 1 leaves x exactly as it is
        x = x - (freq * count.to(tl.float32) + pres * generated.to(tl.float32))
        tl.store(logits_ptr + base + offs, x, mask=mask)


@triton.jit
def _record_kernel(counts_ptr, tokens_ptr, B, V, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    token = tl.load(tokens_ptr + rows, mask=rows < B, other=-1).to(tl.int64)
    mask = (rows < B) & (token >= 0) & (token < V)
    ptrs = counts_ptr + rows.to(tl.int64) * V + token
    tl.store(ptrs, tl.load(ptrs, mask=mask, other=0) + 1, mask=mask)


def _split(value):
    return (value, 0.0) if isinstance(value, torch.Tensor) else (None, float(value))


@custom_op("pydecode_triton::apply_penalties_", mutates_args={"logits"})
def _penalties_op(logits: torch.Tensor, token_counts: torch.Tensor, prompt_mask: torch.Tensor | None,
                  rep_tensor: torch.Tensor | None, rep_value: float, freq_tensor: torch.Tensor | None,
                  freq_value: float, pres_tensor: torch.Tensor | None, pres_value: float) -> None:
    batch, vocab = logits.shape
    if batch == 0:
        return
    block = launch_constants(BLOCK=(4096, 16384))["BLOCK"]
    dummy = token_counts
    _penalties_kernel[(batch, triton.cdiv(vocab, block))](
        logits, token_counts, dummy if prompt_mask is None else prompt_mask.contiguous().view(torch.uint8), vocab,
        dummy if rep_tensor is None else rep_tensor, rep_value, dummy if freq_tensor is None else freq_tensor,
        freq_value, dummy if pres_tensor is None else pres_tensor, pres_value,
        REP_TENSOR=rep_tensor is not None, FREQ_TENSOR=freq_tensor is not None, PRES_TENSOR=pres_tensor is not None,
        HAS_PROMPT=prompt_mask is not None, BLOCK=block, num_warps=4,
    )


@custom_op("pydecode_triton::record_tokens_", mutates_args={"token_counts"})
def _record_op(token_counts: torch.Tensor, tokens: torch.Tensor) -> None:
    batch, vocab = token_counts.shape
    if batch == 0:
        return
    block = min(1024, triton.next_power_of_2(batch))
    _record_kernel[(triton.cdiv(batch, block),)](token_counts, tokens.contiguous(), batch, vocab, BLOCK=block)


@_penalties_op.register_fake
def _(logits, token_counts, prompt_mask, *params):
    return None


@_record_op.register_fake
def _(token_counts, tokens):
    return None


def apply_penalties_(logits, token_counts, prompt_mask, repetition=1.0, frequency=0.0, presence=0.0):
    """Penalise contiguous float32 ``logits`` (B, V) in place from int32 ``token_counts`` (B, V) and bool
    ``prompt_mask`` (B, V) or None; each penalty is a scalar or a (B,) tensor. Returns ``logits``."""
    if all(not isinstance(v, torch.Tensor) for v in (repetition, frequency, presence)) and \
            (repetition, frequency, presence) == (1.0, 0.0, 0.0):
        return logits
    _penalties_op(logits, token_counts, prompt_mask, *_split(repetition), *_split(frequency), *_split(presence))
    return logits


def record_tokens_(token_counts, tokens):
    """``token_counts[b, tokens[b]] += 1`` in place for contiguous int32 counts (B, V); ids outside [0, V) are
    ignored. Returns ``token_counts``."""
    _record_op(token_counts, tokens.reshape(-1))
    return token_counts
