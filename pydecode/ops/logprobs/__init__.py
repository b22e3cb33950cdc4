"""The log-probability op: the chosen token's logprob and the top-n alternatives.

Backend contract (``reference``, ``native``, ``pydecode.triton_kernels.logprobs``):
``token_logprobs(logits, tokens, top_n) -> (chosen (B,), top_values (B, n), top_ids (B, n))``.
"""
from __future__ import annotations

import torch

from ..backends import register_op, resolve
from ..validation import check_logits, check_tokens

register_op("token_logprobs", __name__, "logprobs")


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top_n: int = 0, *, backend: str | None = None):
    """Log-softmax of ``logits`` (B, V) at ``tokens`` (B,) and the ``top_n`` most likely (values, ids) per row.

    Returns ``(logprob (B,) float32, top_values (B, top_n) float32, top_ids (B, top_n) int64)``; NaN counts as -inf.
    """
    check_logits(logits)
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0:
        raise ValueError(f"top_logprobs must be an integer >= 0, got {top_n!r}")
    check_tokens(tokens, *logits.shape)
    return token_logprobs_unchecked(logits, tokens, top_n, backend)


def token_logprobs_unchecked(logits, tokens, top_n: int = 0, backend=None):
    """:func:`token_logprobs` without argument checks, for the decode loop."""
    _, fn = resolve("token_logprobs", logits.device, backend)
    return fn(logits, tokens, top_n)
