"""Prompt-lookup decoding: draft tokens are copied from the text so far, after an n-gram matching its end.

As transformers' prompt-lookup candidates: for n from ``max_matching_ngram_size`` (default 2) down to 1, the first
(earliest) earlier occurrence of the row's last n tokens whose continuation is non-empty gives up to
``prompt_lookup_num_tokens`` drafts, cut before the first eos. Rows search their own text (prompt padding never
matches), all on the device.

Unlike transformers, a row whose drafts failed (it accepted fewer than 2 of them, or none of one) drafts nothing for
the next 1, 2, 4, then 8 steps (doubling with each failure, back to 1 after a success); the first drafts, verified
in the prompt's own forward, cost next to nothing and start no back-off. A verification forward costs about 1.3 to
1.6 one-token steps with one draft and 2.1 to 2.4 with ten (SmolLM2-135M on one CPU thread), so drafts that keep
failing (text that does not copy the prompt) would make decoding slower than plain greedy. Which drafts are proposed
never changes the tokens (greedy) or their distribution (sampling).
"""
from __future__ import annotations

import torch

from ...context import DecodeContext
from .speculative import DraftState, Verified, run_speculative


def check_prompt_lookup(config) -> tuple[int, int]:
    """``(prompt_lookup_num_tokens, max_matching_ngram_size)``; raises ValueError unless both are integers >= 1."""
    num_tokens = config.prompt_lookup_num_tokens
    ngram = config.max_matching_ngram_size if config.max_matching_ngram_size is not None else 2
    for name, value in (("prompt_lookup_num_tokens", num_tokens), ("max_matching_ngram_size", ngram)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return num_tokens, ngram


def run(ctx: DecodeContext):
    """Prompt-lookup decoding (see :mod:`.speculative` for the loop)."""
    num_tokens, ngram = check_prompt_lookup(ctx.config)
    return run_speculative(ctx, LookupProposer(num_tokens, ngram, ctx.eos_ids))


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
    """Proposes n-gram continuations; per row, how many steps to wait before drafting again after a failure."""

    def __init__(self, num_tokens: int, max_ngram: int, eos: torch.Tensor | None):
        self.num_tokens, self.max_ngram, self.eos = num_tokens, max_ngram, eos
        self.wait = self.backoff = None  # (B,) steps left to wait, and the wait after the next failure
        self.first = True  # the next verification is the first one

    def begin(self, input_ids: torch.Tensor) -> None:
        self.wait = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        self.backoff = torch.ones_like(self.wait)
        self.first = True

    def propose(self, state: DraftState, k: int, step: int):
        drafts, count = lookup_drafts(state.history[:, :-1], state.valid, state.lengths, self.max_ngram, k, self.eos)
        count = torch.where(state.active & (self.wait == 0), torch.minimum(count, state.room), 0)
        width = int(count.max())  # one host read: the block is only as wide as the longest row's drafts
        return drafts[:, :width], count, None

    def accept(self, verified: Verified) -> None:
        if self.first:  # the first drafts ride on the prompt's forward: failing them cost next to nothing
            self.first = False
            return
        drafted = verified.active & (verified.num_draft > 0)
        failed = drafted & (verified.accepted < verified.num_draft.clamp(max=2))
        self.wait = torch.where(failed, self.backoff, (self.wait - verified.active.long()).clamp(min=0))
        self.backoff = torch.where(failed, (self.backoff * 2).clamp(max=8),
                                   torch.where(drafted, 1, self.backoff))
