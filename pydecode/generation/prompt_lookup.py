"""Prompt-lookup decoding: draft tokens are copied from the text so far, after an n-gram matching its end.

As transformers' prompt-lookup candidates: for n from ``max_matching_ngram_size`` (default 2) down to 1, the first
(earliest) earlier occurrence of the row's last n tokens whose continuation is non-empty gives up to
``prompt_lookup_num_tokens`` drafts, cut before the first eos. Rows search their own text (prompt padding never
matches), all on the device.
"""
from __future__ import annotations

import torch

from .context import DecodeContext
from .speculative import DraftState, run_speculative


def run(ctx: DecodeContext):
    """Prompt-lookup decoding (see :mod:`.speculative` for the loop)."""
    config = ctx.config
    num_tokens = config.prompt_lookup_num_tokens
    ngram = config.max_matching_ngram_size if config.max_matching_ngram_size is not None else 2
    for name, value in (("prompt_lookup_num_tokens", num_tokens), ("max_matching_ngram_size", ngram)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    eos = torch.tensor(ctx.eos_ids, device=ctx.input_ids.device) if ctx.eos_ids else None
    return run_speculative(ctx, LookupProposer(num_tokens, ngram, eos))


def lookup_drafts(history: torch.Tensor, valid: torch.Tensor, lengths: torch.Tensor, max_ngram: int, k: int,
                  eos: torch.Tensor | None = None):
    """Drafts (B, k) and their counts (B,) from n-gram matches.

    ``history`` (B, L) token ids, ``valid`` (B, L) bool (False: padding), ``lengths`` (B,) tokens so far per row.
    """
    batch, length = history.shape
    device = history.device
    count = torch.zeros(batch, dtype=torch.long, device=device)
    start = torch.zeros(batch, dtype=torch.long, device=device)
    found = torch.zeros(batch, dtype=torch.bool, device=device)
    valid = valid & (torch.arange(length, device=device)[None, :] < lengths[:, None])
    for n in range(max_ngram, 0, -1):
        if length < n + 1:
            continue
        tail_index = (lengths[:, None] - n + torch.arange(n, device=device)).clamp(min=0)
        tail = history.gather(1, tail_index)
        match = (history.unfold(1, n, 1) == tail[:, None, :]).all(-1) & valid.unfold(1, n, 1).all(-1)
        begin = torch.arange(match.shape[1], device=device)
        match &= (begin[None, :] + n < lengths[:, None]) & (lengths[:, None] > n)  # transformers: n < length
        hit = match.any(1) & ~found
        first = match.int().argmax(1)
        start = torch.where(hit, first + n, start)
        count = torch.where(hit, torch.clamp(lengths - (first + n), max=k), count)
        found |= hit
    index = (start[:, None] + torch.arange(k, device=device)).clamp(max=length - 1)
    drafts = history.gather(1, index)
    if eos is not None:
        is_eos = torch.isin(drafts, eos)
        count = torch.minimum(count, torch.where(is_eos.any(1), is_eos.int().argmax(1), k))
    return drafts, count


class LookupProposer:
    """Proposes n-gram continuations; keeps no state of its own."""

    def __init__(self, num_tokens: int, max_ngram: int, eos: torch.Tensor | None):
        self.num_tokens, self.max_ngram, self.eos = num_tokens, max_ngram, eos

    def prefill(self, input_ids: torch.Tensor) -> None:
        pass

    def propose(self, state: DraftState, k: int, step: int):
        drafts, count = lookup_drafts(state.history[:, :-1], state.valid, state.lengths, self.max_ngram, k, self.eos)
        count = torch.where(state.active, torch.minimum(count, state.room), 0)
        width = int(count.max())  # one host read: the block is only as wide as the longest row's drafts
        return drafts[:, :width], count, None

    def accept(self, accepted: torch.Tensor, active: torch.Tensor, longest: int, all_accepted: bool) -> None:
        pass
