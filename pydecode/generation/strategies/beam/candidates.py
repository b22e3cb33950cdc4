"""What beam search and diverse beam search share: the never-pick score, the logprob outputs of candidates, and
the gather of per-beam histories."""
from __future__ import annotations

import torch

NEVER_PICK = -1.0e9  # transformers' "never pick this" score offset; kept bit for bit for parity
# output field -> the per-token history that holds it
LOGPROB_FIELDS = {"logprobs": "logprob", "processed_logprobs": "processed", "top_logprobs": "top_values",
                  "top_logprob_ids": "top_ids"}


def candidate_logprobs(raw_lp: torch.Tensor, processed: torch.Tensor | None, rows: torch.Tensor, tokens: torch.Tensor,
                       top_n: int) -> dict:
    """Logprobs of the candidates ``tokens`` (B, K) of the beam rows ``rows`` (B*K,): ``logprob`` under the raw
    log-probs ``raw_lp`` (rows, V), ``processed`` under ``log_softmax(processed)`` (the raw ones when None), and the
    rows' ``top_n`` best raw alternatives (``top_values``, ``top_ids``, (B, K, n)) when ``top_n > 0``."""
    flat = tokens.reshape(-1)
    values = {"logprob": raw_lp[rows, flat].view_as(tokens)}
    values["processed"] = (values["logprob"] if processed is None
                           else processed.log_softmax(dim=-1)[rows, flat].view_as(tokens))
    if top_n:
        top = raw_lp.topk(min(top_n, raw_lp.shape[-1]), dim=-1)  # at most the vocabulary, as token_logprobs
        values["top_values"] = top.values.index_select(0, rows).view(*tokens.shape, -1)
        values["top_ids"] = top.indices.index_select(0, rows).view(*tokens.shape, -1)
    return values


def gather_beams(history: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``history`` (B, M, T, ...) at beams ``index`` (B, n) of each prompt: (B, n, T, ...)."""
    expanded = index.view(*index.shape, *[1] * (history.dim() - 2)).expand(-1, -1, *history.shape[2:])
    return history.gather(1, expanded)
