"""Log-softmax at the chosen token (one program per row, online max and sum), and the top-n logprobs.

The top-n use ``torch.topk`` on the row's log-probabilities, which the kernel writes in a second pass only when
``top_n > 0``: a selection kernel would save one (B, V) write, not worth its code next to the sampler's passes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import custom_op

from ._jit import launch_constants


@triton.jit
def _logprobs_kernel(logits_ptr, tokens_ptr, chosen_ptr, all_ptr, V, stride, WRITE_ALL: tl.constexpr,
                     BLOCK: tl.constexpr):
    row = tl.program_id(0)
    row_ptr = logits_ptr + row.to(tl.int64) * stride
    neg_inf = float("-inf")
    m = tl.full([], neg_inf, tl.float32)
    z = tl.full([], 0.0, tl.float32)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        x = tl.load(row_ptr + offs, mask=offs < V, other=neg_inf).to(tl.float32)
        x = tl.where(x == x, x, neg_inf)
        m_new = tl.maximum(m, tl.max(x, 0))
        z = z * tl.where(m == m_new, 1.0, tl.exp(m - m_new))
        z += tl.sum(tl.where(x > neg_inf, tl.exp(x - m_new), 0.0), 0)
        m = m_new
    log_z = tl.log(z)  # (x - m) - log_z: m + log_z rounded at m's scale would lose ulps of large logits
    token = tl.load(tokens_ptr + row).to(tl.int64)
    x_t = tl.load(row_ptr + token, mask=(token >= 0) & (token < V), other=neg_inf).to(tl.float32)
    tl.store(chosen_ptr + row, (tl.where(x_t == x_t, x_t, neg_inf) - m) - log_z)
    if WRITE_ALL:
        for start in range(0, V, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x = tl.load(row_ptr + offs, mask=offs < V, other=neg_inf).to(tl.float32)
            tl.store(all_ptr + row.to(tl.int64) * V + offs, (tl.where(x == x, x, neg_inf) - m) - log_z, mask=offs < V)


@custom_op("pydecode_triton::token_logprobs", mutates_args=())
def _logprobs_op(logits: torch.Tensor, tokens: torch.Tensor, top_n: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
    batch, vocab = logits.shape
    chosen = torch.empty(batch, dtype=torch.float32, device=logits.device)
    n = min(top_n, vocab)
    every = torch.empty(batch if n > 0 else 0, vocab, dtype=torch.float32, device=logits.device)
    if batch > 0:
        _logprobs_kernel[(batch,)](
            logits, tokens, chosen, every, vocab, logits.stride(0), WRITE_ALL=n > 0,
            **launch_constants(BLOCK=(2048, 16384)), num_warps=8,
        )
    if n > 0:
        top_values, top_ids = torch.topk(every, n, dim=-1)
        return chosen, top_values, top_ids
    return chosen, chosen.new_empty(batch, 0), torch.empty(batch, 0, dtype=torch.int64, device=logits.device)


@_logprobs_op.register_fake
def _(logits, tokens, top_n):
    batch, vocab = logits.shape
    n = min(top_n, vocab)
    return (logits.new_empty(batch, dtype=torch.float32), logits.new_empty(batch, n, dtype=torch.float32),
            logits.new_empty(batch, n, dtype=torch.int64))


def token_logprobs(logits, tokens, top_n: int = 0):
    """Log-softmax of ``logits`` (B, V) fp32/fp16/bf16 at ``tokens`` (B,), NaN as -inf, and the ``top_n`` best.

    Returns ``(logprob (B,) float32, top_values (B, top_n) float32, top_ids (B, top_n) int64)``.
    """
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    return _logprobs_op(logits, tokens.reshape(-1), int(top_n))
