"""pydecode's processors for one engine request, engine-free: the engine adapters (vLLM, SGLang) feed them each
step's logits rows and the request's token history (prompt + generated tokens).

- :class:`RequestBans`: ``sequence_bias``, then the ``no_repeat_ngram_size`` and ``bad_words_ids`` bans, as
  transformers runs them (on the logits before penalties and temperature).
- :func:`apply_warpers`: dynamic temperature, ``top_h``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff`` (pydecode's
  order) on logits already divided by each row's temperature.

Both run pydecode's torch implementations (:mod:`pydecode.ops.sample`, :mod:`pydecode.ops.constraints`,
:mod:`pydecode.generation.logits.extra_processors`).
Token ids outside the vocabulary can never occur, so a bad word or biased sequence holding one is dropped.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from ..generation.logits.extra_processors import ExtraProcessors
from ..ops.constraints import bad_words_banned, no_repeat_ngram_banned
from ..ops.sample import dynamic_temperature, epsilon_filter, eta_filter, top_h_filter, typical_filter
from .request_args import RequestArgs

GREEDY_BELOW = 1e-5  # the temperature below which vLLM and SGLang decode greedily


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


def apply_warpers(scores: torch.Tensor, args: list[RequestArgs], temperatures: list[float]) -> torch.Tensor:
    """The warpers of ``args`` (one per row) on float32 ``scores`` (R, V), each row already divided by its
    (sampling, > 0) base temperature in ``temperatures``; returns new scores.

    Dynamic temperature rescales a row by ``t / t_dyn``, ``t_dyn`` computed from the undivided logits' entropy.
    """
    def per_row(values):
        return torch.tensor(values, dtype=torch.float32, device=scores.device)

    if any(a.dynatemp_range > 0 for a in args):
        base = per_row(temperatures)
        dynamic = dynamic_temperature(scores * base[:, None], base, per_row([a.dynatemp_range for a in args]),
                                      per_row([a.dynatemp_exponent for a in args]))
        scores = scores * (base / dynamic.clamp(min=GREEDY_BELOW))[:, None]
    scores = top_h_filter(scores, per_row([a.top_h for a in args]))
    scores = typical_filter(scores, per_row([a.typical_p for a in args]))
    scores = epsilon_filter(scores, per_row([a.epsilon_cutoff for a in args]))
    return eta_filter(scores, per_row([a.eta_cutoff for a in args]))
