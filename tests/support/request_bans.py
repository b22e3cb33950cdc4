"""The bans and biases of one engine request, one row at a time with pydecode's reference processors: the oracle
that :class:`pydecode.integrations.batch_bans.BatchBans` (the whole batch at once, on the device) and the engine
adapters are tested against.

:class:`RequestBans` runs ``sequence_bias``, then the ``no_repeat_ngram_size`` and ``bad_words_ids`` bans, as
transformers runs them (on the logits before penalties and temperature). Token ids outside the vocabulary can never
occur, so a bad word or biased sequence holding one is dropped.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from pydecode.generation.logits.extra_processors import ExtraProcessors
from pydecode.integrations.request_args import RequestArgs
from pydecode.ops.constraints import bad_words_banned, no_repeat_ngram_banned


def _sequence_bias(pairs, vocab: int, device) -> ExtraProcessors | None:
    """pydecode's ``sequence_bias`` processor for ``pairs`` [(ids, bias)], or None when there are none."""
    if not pairs:
        return None
    config = SimpleNamespace(sequence_bias=[[list(ids), bias] for ids, bias in pairs],
                             encoder_repetition_penalty=None, encoder_no_repeat_ngram_size=None,
                             exponential_decay_length_penalty=None, begin_suppress_tokens=None, max_length=0,
                             forced_bos_token_id=None)
    extra = ExtraProcessors(config, torch.empty(1, 0, dtype=torch.int64), prompt_len=0, eos_ids=None)
    extra.prepare(vocab, device)
    return extra


class RequestBans:
    """The bans and biases of one request over a vocabulary of ``vocab`` token ids (logits may be wider)."""

    def __init__(self, args: RequestArgs, vocab: int, device):
        self.vocab = vocab
        self.ngram_size = args.no_repeat_ngram_size
        self.bad_words = [(torch.tensor(ids[:-1], dtype=torch.int64, device=device), ids[-1])
                          for ids in args.bad_words_ids or () if max(ids) < vocab]
        in_vocab = [(ids, value) for ids, value in args.sequence_bias or () if max(ids) < vocab]
        self.bias = _sequence_bias(in_vocab, vocab, device)

    def apply(self, scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """``scores`` (1, V') float logits of the next token after ``history`` (1, H) int64; returns new scores."""
        if self.bias is not None:
            at = torch.full((1, 1), history.shape[1], dtype=torch.int64, device=history.device)
            scores = self.bias.before_penalties(scores[:, None], history, at)[:, 0]
        banned = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        if self.ngram_size:
            banned[:, :self.vocab] |= no_repeat_ngram_banned(history, self.ngram_size, self.vocab)
        if self.bad_words:
            banned[:, :self.vocab] |= bad_words_banned(history, self.bad_words, self.vocab)
        return scores.masked_fill(banned, float("-inf"))
