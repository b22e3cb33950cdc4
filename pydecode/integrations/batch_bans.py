"""The bans and biases of engine requests (``sequence_bias``, ``no_repeat_ngram_size``, ``bad_words_ids``) for a
whole batch at once, on the device.

Per-slot tables (one slot per engine request) hold each request's ``no_repeat_ngram_size`` and its membership in
the batch's bad-word and sequence-bias entries; a step takes the rows' token histories as a device tensor and
applies every row's entries in a few batched ops, with no read back to the host. Entries are grouped by prefix
length: a row matches an entry when its history ends with the entry's prefix, and then the entry's value (a bias,
or ``-inf`` for a bad word) is added to the entry's last token. The tests' oracle is ``RequestBans``
(``tests/support/request_bans.py``: one request at a time, pydecode's reference processors).
"""
from __future__ import annotations

import torch

from ..ops.constraints import history_tail, ngram_completions
from .request_args import RequestArgs

_BAN = float("-inf")


class BatchBans:
    """Bans and biases of up to ``max_slots`` requests over a vocabulary of ``vocab`` ids (logits may be wider)."""

    def __init__(self, max_slots: int, vocab: int, device):
        self.vocab, self.device = vocab, torch.device(device)
        self.ngram = torch.zeros(max_slots, dtype=torch.int64, device=self.device)
        self.ngram_of: dict[int, int] = {}  # slot -> n, host copy (which n-gram sizes a step computes)
        self.entries: dict[int, dict[tuple, int]] = {}  # prefix length -> {(prefix, last): column}
        self.prefixes: dict[int, torch.Tensor] = {}  # prefix length -> (E, n) prefixes
        self.lasts: dict[int, torch.Tensor] = {}  # prefix length -> (E,) last tokens
        self.values: dict[int, torch.Tensor] = {}  # prefix length -> (max_slots, E) value per slot (0: not its)
        self.max_slots = max_slots

    def add(self, slot: int, args: RequestArgs) -> bool:
        """Set ``slot``'s bans and biases from ``args``; returns whether it has any."""
        self.remove(slot)
        in_vocab = [((tuple(ids[:-1]), ids[-1]), _BAN) for ids in args.bad_words_ids or () if max(ids) < self.vocab]
        in_vocab += [((tuple(ids[:-1]), ids[-1]), bias) for ids, bias in args.sequence_bias or ()
                     if max(ids) < self.vocab]
        for key, value in in_vocab:
            n = len(key[0])
            column = self._column(n, key)
            self.values[n][slot, column] += value
        if args.no_repeat_ngram_size:
            self.ngram[slot] = args.no_repeat_ngram_size
            self.ngram_of[slot] = args.no_repeat_ngram_size
        return bool(in_vocab or args.no_repeat_ngram_size)

    def remove(self, slot: int) -> None:
        for values in self.values.values():
            values[slot] = 0.0
        self.ngram[slot] = 0
        self.ngram_of.pop(slot, None)

    def _column(self, n: int, key: tuple) -> int:
        columns = self.entries.setdefault(n, {})
        if key not in columns:
            columns[key] = len(columns)
            prefix = torch.tensor([key[0]], dtype=torch.int64, device=self.device).reshape(1, n)
            last = torch.tensor([key[1]], dtype=torch.int64, device=self.device)
            grown = torch.zeros(self.max_slots, len(columns), device=self.device)
            if n in self.values:
                grown[:, :-1] = self.values[n]
                prefix, last = torch.cat([self.prefixes[n], prefix]), torch.cat([self.lasts[n], last])
            self.prefixes[n], self.lasts[n], self.values[n] = prefix, last, grown
        return columns[key]

    def apply(self, scores: torch.Tensor, slots: torch.Tensor, history: torch.Tensor,
              length: torch.Tensor) -> torch.Tensor:
        """``scores`` (N, V') float32 of the next token of rows ``slots`` (N,) whose histories are the first
        ``length`` (N,) tokens of ``history`` (N, L) int64; returns the biased and banned scores (a new tensor)."""
        scores = scores.clone()
        at = length[:, None]
        for n, prefixes in self.prefixes.items():
            values = self.values[n].index_select(0, slots)  # (N, E)
            ends = (history_tail(history, at, n)[:, 0, None, :] == prefixes[None]).all(-1) if n else True
            hit = (values != 0) & ends & (length >= n)[:, None]
            scores[:, : self.vocab].index_add_(1, self.lasts[n], torch.where(hit, values, 0.0))
        sizes = sorted(set(self.ngram_of.values()))
        if sizes:
            banned = torch.zeros(scores.shape[0], self.vocab, dtype=torch.bool, device=scores.device)
            row_sizes = self.ngram.index_select(0, slots)[:, None]
            for n in (n for n in sizes if n <= history.shape[1]):
                grams = history.unfold(1, n, 1)  # (N, G, n)
                inside = torch.arange(grams.shape[1], device=scores.device) <= (at - n)[..., None]
                hit = ngram_completions(grams, history_tail(history, at, n - 1), self.vocab, inside)[:, 0]
                banned |= hit & (row_sizes == n)
            scores[:, : self.vocab].masked_fill_(banned, _BAN)
        return scores
