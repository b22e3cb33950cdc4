"""The logprobs op's cpp / cuda backend: the adapter to ``torch.ops.pydecode.token_logprobs`` and its fake
implementation for ``torch.compile``."""
from __future__ import annotations

import torch

from ..extension import native_ops


def token_logprobs(logits, tokens, top_n=0):
    """``(logprob (B,), top_values (B, n), top_ids (B, n))`` with ``n = min(top_n, V)``."""
    return native_ops.token_logprobs(logits, tokens, int(top_n))


@torch.library.register_fake("pydecode::token_logprobs")
def _logprobs_fake(logits, tokens, top_n):
    batch, vocab = logits.shape
    n = min(top_n, vocab)
    return (logits.new_empty(batch, dtype=torch.float32), logits.new_empty(batch, n, dtype=torch.float32),
            logits.new_empty(batch, n, dtype=torch.int64))

