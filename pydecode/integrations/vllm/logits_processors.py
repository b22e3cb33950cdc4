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
  ``add_request``, ``apply(logits, ctx)`` on unscaled logits before temperature; the token history is the
  runner's ``all_token_ids`` (on the device). The warpers there compute on ``logits / t`` and hand back ``t``
  times the result, so that the runner's own division by ``t`` gives what the v1 path gives.

A request without pydecode arguments costs nothing; ``validate_params`` runs at admission (a bad value is an HTTP
400 naming it). The bans run for the whole batch in batched device ops, without reading anything back to the host.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from vllm.v1.sample.logits_processor import BatchUpdate
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2LogitsProcessor

from ..batch_bans import BatchBans
from ..processors import GREEDY_BELOW, apply_warpers
from ..request_args import RequestArgs, parse_request_args


@dataclass
class _BanRow:
    slot: int  # v1: the request's slot in the bans tables and the history buffer
    output: list[int]  # vLLM's live list of the request's generated tokens
    length: int  # tokens of the request in the history buffer (prompt, then generated)
    appended: int = 0  # generated tokens already in the buffer


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
    """``sequence_bias``, ``no_repeat_ngram_size`` and ``bad_words_ids`` from ``extra_args``, for all rows at once
    on the device (:class:`~pydecode.integrations.batch_bans.BatchBans`); no value is read back to the host.

    v1: each request with bans holds a slot and a row of a device history buffer (prompt, then the generated tokens
    copied from vLLM's live output list as they arrive). v2: the history is the runner's ``all_token_ids``."""

    def __init__(self, vllm_config, *runner_args):
        super().__init__(vllm_config, *runner_args)
        if self.req_states is None:  # v1
            slots, device = vllm_config.scheduler_config.max_num_seqs, runner_args[0]
        else:
            slots, device = self.req_states.max_num_reqs, self.req_states.device
        self.device = torch.device(device)
        self.bans = BatchBans(slots, self.vocab, self.device)
        self.has_bans = np.zeros(slots, dtype=bool)  # v2: slot -> has bans (host)
        self.history = torch.zeros(slots, 0, dtype=torch.int64, device=self.device)  # v1
        self._rows: tuple[torch.Tensor, torch.Tensor] | None = None  # v1: (rows, slots) on the device

    def is_argmax_invariant(self) -> bool:
        return False

    # v1 runner
    def _state(self, params, prompt, output) -> _BanRow | None:
        args = parse_request_args(params.extra_args)
        if not args.has_bans:
            return None
        taken = {row.slot for row in self.rows.values()}
        slot = next(s for s in range(self.history.shape[0]) if s not in taken)
        self.bans.add(slot, args)
        prompt = list(prompt or [])
        self._write(slot, 0, prompt)
        return _BanRow(slot, output, len(prompt))

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is not None and (batch_update.added or batch_update.removed or batch_update.moved):
            for row in [*batch_update.removed, *(added[0] for added in batch_update.added)]:
                self.rows.pop(row, None)  # first, so that their slots are free for the added requests
            super().update_state(batch_update)
            self._rows = None

    def _write(self, slot: int, at: int, tokens: list[int]) -> None:
        if at + len(tokens) > self.history.shape[1]:
            grown = torch.zeros(self.history.shape[0], 2 * (at + len(tokens)), dtype=torch.int64, device=self.device)
            grown[:, :self.history.shape[1]] = self.history
            self.history = grown
        if tokens:
            self.history[slot, at:at + len(tokens)] = torch.tensor(tokens, dtype=torch.int64).to(self.device)

    def _catch_up(self) -> torch.Tensor:
        """Copy the tokens vLLM generated since the last step into the buffer; (R,) lengths of the rows."""
        lengths = []
        for state in self.rows.values():
            new = state.output[state.appended:]
            if -1 in new:  # async scheduling's placeholders: the real ids arrive later in the same list
                new = new[:new.index(-1)]
            self._write(state.slot, state.length, new)
            state.length += len(new)
            state.appended += len(new)
            lengths.append(state.length)
        return torch.tensor(lengths, dtype=torch.int64).to(self.device)

    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        if ctx is not None:
            return self._apply_v2(logits, ctx)
        if not self.rows:
            return logits
        if self._rows is None:
            pairs = list(self.rows.items())
            self._rows = tuple(torch.tensor(column, dtype=torch.int64).to(self.device)
                               for column in ([r for r, _ in pairs], [s.slot for _, s in pairs]))
        lengths = self._catch_up()
        rows, slots = self._rows
        scores = logits.index_select(0, rows).float()
        scores = self.bans.apply(scores, slots, self.history.index_select(0, slots), lengths)
        return logits.index_copy_(0, rows, scores.to(logits.dtype))

    # v2 runner
    def add_request(self, req_idx: int, sampling_params) -> bool:
        self.has_bans[req_idx] = self.bans.add(req_idx, parse_request_args(sampling_params.extra_args))
        return bool(self.has_bans[req_idx])

    def _apply_v2(self, logits: torch.Tensor, ctx) -> torch.Tensor:
        """Every row at once (rows without bans come back unchanged); the history is the runner's token ids up to
        the row's position, then its input token."""
        if not self.has_bans[ctx.idx_mapping_np].any():
            return logits
        slots = ctx.expanded_idx_mapping.to(torch.int64)
        positions = ctx.pos.to(torch.int64)[:, None]
        history = self.req_states.all_token_ids.gpu.index_select(0, slots).to(torch.int64)
        history.scatter_(1, positions, ctx.input_ids.to(torch.int64)[:, None])
        scores = self.bans.apply(logits.float(), slots, history, positions[:, 0] + 1)
        return scores.to(logits.dtype)


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
