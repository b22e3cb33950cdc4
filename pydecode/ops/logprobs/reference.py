"""Pure-PyTorch reference of the log-probabilities reported with each token."""
from __future__ import annotations

import torch

from ..rows import sanitize


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top_n: int = 0):
    """Log-softmax of ``logits`` (B, V) at ``tokens`` (B,), and the ``top_n`` best (values, ids) per row.

    Returns ``(logprob (B,) float32, top_values (B, top_n) float32, top_ids (B, top_n) int64)``.
    """
    log_probs = sanitize(logits).log_softmax(dim=-1)
    chosen = log_probs.gather(1, tokens.view(-1, 1).to(torch.int64)).squeeze(1)
    if top_n > 0:
        top = log_probs.topk(min(top_n, log_probs.shape[-1]), dim=-1)
        return chosen, top.values, top.indices
    empty = log_probs.new_empty(log_probs.shape[0], 0)
    return chosen, empty, empty.to(torch.int64)
