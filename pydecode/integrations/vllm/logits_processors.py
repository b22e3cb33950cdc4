"""vLLM logits processors running pydecode's processors that vLLM lacks, per request, from
``SamplingParams.extra_args`` under pydecode's parameter names (:mod:`pydecode.integrations.request_args`).

vLLM's sampler runs its processors in two groups, so pydecode's come as two classes:

- :class:`PydecodeBansProcessor` (can change the greedy token; runs on every request before vLLM's penalties):
  ``sequence_bias``, ``no_repeat_ngram_size``, ``bad_words_ids`` (token-id sequences), over the prompt and the
  generated tokens as transformers does.
- :class:`PydecodeWarpersProcessor` (sampling requests only; runs after vLLM's temperature and min-p, before its
  top-k / top-p): dynamic temperature (``dynatemp_range``, ``dynatemp_exponent``), ``top_h``, ``typical_p``,
  ``epsilon_cutoff``, ``eta_cutoff``, in pydecode's order.

State follows the persistent batch through vLLM's ``BatchUpdate`` (removed, added, moved rows); a request without
pydecode arguments costs nothing. ``validate_params`` runs at admission: a bad value is an HTTP 400 naming it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from ..processors import GREEDY_BELOW, RequestBans, apply_warpers
from ..request_args import RequestArgs, parse_request_args


@dataclass
class _BanRow:
    prompt: list[int]
    output: list[int]  # vLLM's live list of the request's generated tokens
    bans: RequestBans


class PydecodeBansProcessor(LogitsProcessor):
    """``sequence_bias``, ``no_repeat_ngram_size`` and ``bad_words_ids`` from ``extra_args``."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        parse_request_args(sampling_params.extra_args)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.vocab = vllm_config.model_config.get_vocab_size()
        self.device = device
        self.rows: dict[int, _BanRow] = {}

    def is_argmax_invariant(self) -> bool:
        return False

    def _new_state(self, params, prompt: list[int] | None, output: list[int]) -> _BanRow | None:
        args = parse_request_args(params.extra_args)
        if not args.has_bans:
            return None
        return _BanRow(prompt or [], output, RequestBans(args, self.vocab, self.device))

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        for row, state in self.rows.items():
            history = torch.tensor([state.prompt + state.output], dtype=torch.int64, device=logits.device)
            logits[row] = state.bans.apply(logits[row:row + 1], history)[0]
        return logits


@dataclass
class _WarperRow:
    temperature: float
    args: RequestArgs


class PydecodeWarpersProcessor(LogitsProcessor):
    """Dynamic temperature, ``top_h``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff`` from ``extra_args``
    (vLLM hands this processor logits already divided by the request's temperature)."""

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        parse_request_args(sampling_params.extra_args)

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        self.rows: dict[int, _WarperRow] = {}

    def is_argmax_invariant(self) -> bool:
        return True

    def _new_state(self, params, prompt: list[int] | None, output: list[int]) -> _WarperRow | None:
        args = parse_request_args(params.extra_args)
        if not args.has_warpers or params.temperature < GREEDY_BELOW:
            return None
        return _WarperRow(params.temperature, args)

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._new_state)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.rows:
            return logits
        states = list(self.rows.values())
        index = torch.tensor(list(self.rows), dtype=torch.int64, device=logits.device)
        scores = apply_warpers(logits.index_select(0, index).float(), [s.args for s in states],
                               [s.temperature for s in states])
        return logits.index_copy_(0, index, scores.to(logits.dtype))
