"""vLLM logits processors running pydecode's processors that vLLM lacks, per request, from
``SamplingParams.extra_args`` under pydecode's parameter names (:mod:`pydecode.integrations.request_args`).

vLLM's sampler runs its processors in two groups, so pydecode's come as two classes:

- :class:`PydecodeBansProcessor` (can change the greedy token; runs on every request before vLLM's penalties):
  ``sequence_bias``, ``no_repeat_ngram_size``, ``bad_words_ids`` (token-id sequences), over the prompt and the
  generated tokens as transformers does.
- :class:`PydecodeWarpersProcessor` (sampling requests only; runs after vLLM's temperature and min-p, before its
  top-k / top-p): dynamic temperature (``dynatemp_range``, ``dynatemp_exponent``), ``top_h``, ``typical_p``,
  ``epsilon_cutoff``, ``eta_cutoff`` — in pydecode's order.

State follows the persistent batch through vLLM's ``BatchUpdate`` (removed, added, moved rows); a request without
pydecode arguments costs nothing. Token ids outside the model's vocabulary can never occur, so a bad word or biased
sequence holding one is dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from ...generation.extra_processors import ExtraProcessors
from ...ops.reference import bad_words_banned, no_repeat_ngram_banned
from ...ops.reference.cutoffs import epsilon_filter, eta_filter, top_h_filter
from ...ops.reference.dynatemp import dynamic_temperature
from ...ops.reference.sampling import typical_filter
from ..request_args import RequestArgs, parse_request_args

_GREEDY_BELOW = 1e-5  # vLLM treats a temperature below this as greedy


def _vocab_size(vllm_config) -> int:
    return vllm_config.model_config.get_vocab_size()


def _validate(sampling_params) -> RequestArgs:
    return parse_request_args(sampling_params.extra_args)


@dataclass
class _BanState:
    """One request's bans: its token lists (live references to vLLM's) and the prepared processors."""

    prompt: list[int]
    output: list[int]
    ngram_size: int
    bad_words: list[tuple[torch.Tensor, int]]
    bias: ExtraProcessors | None

    def history(self) -> torch.Tensor:
        return torch.tensor([self.prompt + self.output], dtype=torch.int64)


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


class PydecodeBansProcessor(LogitsProcessor):
    """``sequence_bias``, ``no_repeat_ngram_size`` and ``bad_words_ids`` from ``extra_args``."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        _validate(sampling_params)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.vocab = _vocab_size(vllm_config)
        self.device = device
        self.rows: dict[int, _BanState] = {}

    def is_argmax_invariant(self) -> bool:
        return False

    def _new_state(self, params, prompt: list[int] | None, output: list[int]) -> _BanState | None:
        args = _validate(params)
        if not args.has_bans:
            return None
        in_vocab = [ids for ids in args.bad_words_ids if max(ids) < self.vocab]
        bad_words = [(torch.tensor(ids[:-1], dtype=torch.int64), ids[-1]) for ids in in_vocab]
        bias = [(ids, value) for ids, value in args.sequence_bias if max(ids) < self.vocab]
        return _BanState(prompt or [], output, args.no_repeat_ngram_size, bad_words,
                         _sequence_bias(bias, self.vocab, self.device))

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[1]
        for row, state in self.rows.items():
            history = state.history()
            scores = logits[row:row + 1]
            if state.bias is not None:
                at = torch.tensor([[history.shape[1]]])
                scores = state.bias.before_penalties(scores[:, None], history, at)[:, 0]
            banned = torch.zeros(1, vocab, dtype=torch.bool)
            if state.ngram_size:
                banned[:, :self.vocab] |= no_repeat_ngram_banned(history, state.ngram_size, self.vocab)
            if state.bad_words:
                banned[:, :self.vocab] |= bad_words_banned(history, state.bad_words, self.vocab)
            logits[row] = scores.masked_fill(banned.to(logits.device), float("-inf"))[0]
        return logits


@dataclass
class _WarperState:
    temperature: float
    args: RequestArgs


class PydecodeWarpersProcessor(LogitsProcessor):
    """Dynamic temperature, ``top_h``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff`` from ``extra_args``.

    vLLM hands this processor logits already divided by the request's temperature ``t``; dynamic temperature
    rescales them by ``t / t_dyn``, ``t_dyn`` computed from the entropy of the undivided logits.
    """

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        _validate(sampling_params)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.device = device
        self.rows: dict[int, _WarperState] = {}

    def is_argmax_invariant(self) -> bool:
        return True

    def _new_state(self, params, prompt: list[int] | None, output: list[int]) -> _WarperState | None:
        args = _validate(params)
        if not args.has_warpers or params.temperature < _GREEDY_BELOW:
            return None
        return _WarperState(params.temperature, args)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._new_state)

    def _per_row(self, values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=self.device)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        rows = list(self.rows)
        states = [self.rows[row] for row in rows]
        index = torch.tensor(rows, dtype=torch.int64, device=logits.device)
        scores = logits.index_select(0, index).float()
        if any(s.args.dynatemp_range > 0 for s in states):
            base = self._per_row([s.temperature for s in states])
            dynamic = dynamic_temperature(scores * base[:, None], base,
                                          self._per_row([s.args.dynatemp_range for s in states]),
                                          self._per_row([s.args.dynatemp_exponent for s in states]))
            scores = scores * (base / dynamic.clamp(min=_GREEDY_BELOW))[:, None]
        scores = top_h_filter(scores, self._per_row([s.args.top_h for s in states]))
        scores = typical_filter(scores, self._per_row([s.args.typical_p for s in states]))
        scores = epsilon_filter(scores, self._per_row([s.args.epsilon_cutoff for s in states]))
        scores = eta_filter(scores, self._per_row([s.args.eta_cutoff for s in states]))
        logits.index_copy_(0, index, scores.to(logits.dtype))
        return logits
