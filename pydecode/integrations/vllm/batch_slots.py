"""vLLM's v1 persistent batch mapped onto :class:`pydecode.Sampler` slots.

:class:`PydecodeSamplerState` is a v1 logits processor that changes no logits: the plugin adds it to the model
runner's processors when the sampler swap is on, so that it receives every ``BatchUpdate`` (removed, added, moved
rows). It registers each added request in a free ``Sampler`` slot with its parameters converted by
:func:`pydecode_params`, frees the slot of a removed one, keeps a row -> slot tensor on the device (rebuilt only when
the batch changes) and, before each step, appends the tokens vLLM accepted since the last step (read from vLLM's live
per-request output lists, so discarded samples of partial prefills and vLLM's own fallback steps stay consistent).
"""
from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor

from ...sampler import Sampler, SamplingParams
from ..processors import GREEDY_BELOW
from ..request_args import FIELDS, parse_request_args

# pydecode's bans stay with PydecodeBansProcessor, which runs before the sampler (multi-token sequence_bias is
# beyond pydecode.Sampler)
_BANS = ("no_repeat_ngram_size", "bad_words_ids", "sequence_bias")


def pydecode_params(params) -> SamplingParams:
    """A vLLM ``SamplingParams`` as :class:`pydecode.SamplingParams`: temperature (greedy below 1e-5), top-k / top-p
    / min-p, the three penalties, seed, ``logit_bias``, ``min_tokens`` over the stop token ids, ``max_tokens`` (the
    history length the n-gram bans reserve), and pydecode's warpers from ``extra_args`` (its bans run in
    :class:`~.logits_processors.PydecodeBansProcessor`). Raises ValueError naming a field pydecode rejects."""
    args = parse_request_args(params.extra_args)
    extras = {name: getattr(args, name) for name in FIELDS if name not in _BANS}
    biases = [((int(token),), float(bias)) for token, bias in (params.logit_bias or {}).items()]
    stop_ids = sorted(params.all_stop_token_ids)
    greedy = params.temperature < GREEDY_BELOW
    try:
        return SamplingParams(
            temperature=0.0 if greedy else params.temperature, top_k=max(params.top_k, 0), top_p=params.top_p,
            min_p=params.min_p, repetition_penalty=params.repetition_penalty,
            frequency_penalty=params.frequency_penalty, presence_penalty=params.presence_penalty, seed=params.seed,
            sequence_bias=biases or None, min_new_tokens=params.min_tokens if stop_ids else 0,
            eos_token_id=stop_ids or None, max_new_tokens=params.max_tokens, **extras)
    except (TypeError, ValueError) as error:
        raise ValueError(f"pydecode's vLLM sampler: {error}") from None


class PydecodeSamplerState(V1LogitsProcessor):
    """The ``pydecode.Sampler`` of one v1 model runner and its slot of each persistent-batch row."""

    def __init__(self, vllm_config, device, is_pin_memory: bool = False):
        max_slots = vllm_config.scheduler_config.max_num_seqs
        self.sampler = Sampler(max_slots, vllm_config.model_config.get_vocab_size(), device)
        self.device = torch.device(device)
        self.free = list(range(max_slots - 1, -1, -1))
        self.slot_of_row: dict[int, int] = {}
        self.outputs: dict[int, list[int]] = {}  # slot -> vLLM's live list of the request's output tokens
        self.appended: dict[int, int] = {}  # slot -> how many of them the sampler has
        self.batch_size = 0
        self._slots: torch.Tensor | None = None

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        pydecode_params(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return True

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for row in batch_update.removed:
            self._release(row)
        for row, params, prompt, output in batch_update.added:
            self._release(row)
            slot = self.free.pop()
            self.sampler.add_request(slot, pydecode_params(params), prompt or [])
            self.slot_of_row[row], self.outputs[slot], self.appended[slot] = slot, output, 0
        for a, b, direction in batch_update.moved:
            if direction != MoveDirectionality.SWAP:
                self._release(b)  # a request still at b is replaced (vLLM removes it first)
            slot_a, slot_b = self.slot_of_row.pop(a, None), self.slot_of_row.pop(b, None)
            if slot_a is not None:
                self.slot_of_row[b] = slot_a
            if slot_b is not None and direction == MoveDirectionality.SWAP:
                self.slot_of_row[a] = slot_b
        self.batch_size = batch_update.batch_size
        self._slots = None

    def _release(self, row: int) -> None:
        slot = self.slot_of_row.pop(row, None)
        if slot is not None:
            self.sampler.remove(slot)
            del self.outputs[slot], self.appended[slot]
            self.free.append(slot)

    def slots(self, rows: int) -> torch.Tensor:
        """(rows,) int64 slot of each of the first ``rows`` batch rows, on the device; catches up the history."""
        if self._slots is None:
            if any(row not in self.slot_of_row for row in range(self.batch_size)):
                raise RuntimeError("pydecode's vLLM sampler: a batch row has no request state (a missed BatchUpdate)")
            order = [self.slot_of_row[row] for row in range(self.batch_size)]
            self._slots = torch.tensor(order, dtype=torch.int64).to(self.device)
        self._catch_up()
        return self._slots[:rows]

    def _catch_up(self) -> None:
        """Append each request's output tokens that vLLM accepted since the last step, in one call."""
        slots, tokens = [], []
        for slot, output in self.outputs.items():
            new = output[self.appended[slot]:]
            if -1 in new:  # async scheduling's placeholders: the real ids arrive later in the same list
                new = new[:new.index(-1)]
            slots += [slot] * len(new)
            tokens += new
            self.appended[slot] += len(new)
        if tokens:
            self.sampler.append(torch.tensor(slots).to(self.device), torch.tensor(tokens).to(self.device))
