"""vLLM logits processors running pydecode's processors that vLLM lacks, per request, from
``SamplingParams.extra_args`` under pydecode's parameter names (:mod:`pydecode.integrations.request_args`).

vLLM loads every class of the ``vllm.logits_processors`` entry point into whichever model runner it starts, and
the two runners have different processor interfaces, so each class implements both:

- the v1 runner (``vllm.v1.sample.logits_processor.LogitsProcessor``): state follows the persistent batch through
  ``update_state(BatchUpdate)`` (removed, added, moved rows); processors run in two groups, which is why pydecode's
  come as two classes:

  - :class:`PydecodeBansProcessor` (can change the greedy token; runs before vLLM's penalties): ``sequence_bias``,
    ``no_repeat_ngram_size``, ``bad_words_ids`` (token-id sequences), over the prompt and the generated tokens;
  - :class:`PydecodeWarpersProcessor` (sampling requests only; after vLLM's temperature and min-p, before its top-k /
    top-p): dynamic temperature, ``top_h``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff``, in pydecode's order.

- the GPU model runner v2 (``vllm.v1.worker.gpu.sample.logits_processor.LogitsProcessor``): per-slot state from
  ``add_request``, ``apply(logits, ctx)`` on unscaled logits before temperature; the token history is read from the
  runner's ``all_token_ids``. The warpers there compute on ``logits / t`` and hand back ``t`` times the result, so
  that the runner's own division by ``t`` gives what the v1 path gives.

A request without pydecode arguments costs nothing; ``validate_params`` runs at admission (a bad value is an HTTP
400 naming it). Rows of a request are handled one at a time on the host: this is a plugin, not a fused kernel.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm.v1.sample.logits_processor import BatchUpdate
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2LogitsProcessor

from ..processors import GREEDY_BELOW, RequestBans, apply_warpers
from ..request_args import RequestArgs, parse_request_args


@dataclass
class _BanRow:
    bans: RequestBans
    prompt: list[int] | None = None  # v1: the prompt and vLLM's live list of generated tokens
    output: list[int] | None = None


@dataclass
class _WarperRow:
    temperature: float
    args: RequestArgs


class _BothInterfaces(V1LogitsProcessor, V2LogitsProcessor):
    """Construction and dispatch for both runners: ``(vllm_config, device, is_pin_memory)`` is the v1 runner,
    ``(vllm_config, req_states)`` the v2 one; ``apply(logits)`` / ``apply(logits, ctx)`` likewise."""

    def __init__(self, vllm_config, *runner_args):
        self.vocab = vllm_config.model_config.get_vocab_size()
        self.req_states = runner_args[0] if len(runner_args) == 1 else None
        self.rows: dict = {}  # v1: batch row -> state; v2: request slot -> state

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        parse_request_args(sampling_params.extra_args)

    def _state(self, params, prompt: list[int] | None, output: list[int] | None):
        raise NotImplementedError

    # v1 runner
    def update_state(self, batch_update: BatchUpdate | None) -> None:
        process_dict_updates(self.rows, batch_update, self._state)

    # v2 runner
    def add_request(self, req_idx: int, sampling_params) -> bool:
        state = self._state(sampling_params, None, None)
        if state is None:
            self.rows.pop(req_idx, None)
            return False
        self.rows[req_idx] = state
        return True

    def _v2_rows(self, ctx) -> list[tuple[int, int]]:
        """[(logits row, request slot)] of this step's rows that have a state here."""
        slots = ctx.expanded_idx_mapping.tolist()
        return [(row, slot) for row, slot in enumerate(slots) if slot in self.rows]


class PydecodeBansProcessor(_BothInterfaces):
    """``sequence_bias``, ``no_repeat_ngram_size`` and ``bad_words_ids`` from ``extra_args``."""

    def is_argmax_invariant(self) -> bool:
        return False

    def _state(self, params, prompt, output) -> _BanRow | None:
        args = parse_request_args(params.extra_args)
        if not args.has_bans:
            return None
        return _BanRow(RequestBans(args, self.vocab, "cpu"), prompt or [], output)

    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        if ctx is None:
            rows = [(row, state, [state.prompt + state.output]) for row, state in self.rows.items()]
        else:
            history = self.req_states.all_token_ids.gpu
            positions, inputs = ctx.pos.tolist(), ctx.input_ids.tolist()
            rows = [(row, self.rows[slot], [history[slot, :positions[row]].tolist() + [inputs[row]]])
                    for row, slot in self._v2_rows(ctx)]
        for row, state, tokens in rows:
            ids = torch.tensor(tokens, dtype=torch.int64)
            logits[row] = state.bans.apply(logits[row:row + 1].cpu(), ids)[0].to(logits.device)
        return logits


class PydecodeWarpersProcessor(_BothInterfaces):
    """Dynamic temperature, ``top_h``, ``typical_p``, ``epsilon_cutoff``, ``eta_cutoff`` from ``extra_args``."""

    def is_argmax_invariant(self) -> bool:
        return True

    def _state(self, params, prompt, output) -> _WarperRow | None:
        args = parse_request_args(params.extra_args)
        if not args.has_warpers or params.temperature < GREEDY_BELOW:
            return None
        return _WarperRow(params.temperature, args)

    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        pairs = list(self.rows.items()) if ctx is None else [(r, self.rows[s]) for r, s in self._v2_rows(ctx)]
        if not pairs:
            return logits
        index = torch.tensor([row for row, _ in pairs], dtype=torch.int64, device=logits.device)
        temperatures = [state.temperature for _, state in pairs]
        scores = logits.index_select(0, index).float()
        if ctx is not None:  # v2: the runner divides by the temperature after this processor
            scores = scores / torch.tensor(temperatures, device=scores.device)[:, None]
        scores = apply_warpers(scores, [state.args for _, state in pairs], temperatures)
        if ctx is not None:
            scores = scores * torch.tensor(temperatures, device=scores.device)[:, None]
        return logits.index_copy_(0, index, scores.to(logits.dtype))
