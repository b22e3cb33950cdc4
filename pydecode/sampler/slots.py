"""The per-slot state of :class:`~pydecode.sampler.Sampler`, on the device: one row per request slot.

Per-slot parameters are (max_slots,) tensors; the token tables (counts, prompt presence, bans, eos ids) are
(max_slots, V) and allocated on first use, so a batch of plain requests pays for none of them. The host keeps each
active slot's :class:`~.params.SamplingParams` (set in :meth:`SlotTable.add`, never read back from the device) to
know which steps any active request needs: a step no active request uses is skipped. Each step, :meth:`SlotTable.steps`
gathers the rows' parameters and state into the processor classes of generate()'s one list
(:mod:`pydecode.generation.logits.processors`, in its order).
"""
from __future__ import annotations

import torch

from ..generation.logits.processors import (
    BadWords,
    MinLengthEos,
    NoRepeatNgram,
    OneTokenBadWords,
    Penalties,
    Processor,
    TokenBias,
    in_order,
)
from ..ops.penalties import prompt_token_mask
from ..sampling.params import _SEED_STRIDE, RowParams, _wrap_int64
from .params import SamplingParams

# per-slot parameter tensors: name -> (dtype, the SamplingParams value it holds)
_PER_SLOT = {
    "temperature": torch.float32, "top_k": torch.int32, "top_p": torch.float32, "min_p": torch.float32,
    "typical_p": torch.float32, "top_h": torch.float32, "epsilon_cutoff": torch.float32, "eta_cutoff": torch.float32,
    "repetition_penalty": torch.float32, "frequency_penalty": torch.float32, "presence_penalty": torch.float32,
    "dynatemp_range": torch.float32, "dynatemp_exponent": torch.float32, "seed": torch.int64,
    "min_new_tokens": torch.int64, "max_new_tokens": torch.int64, "no_repeat_ngram_size": torch.int64,
}
_WARPER_OFF = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "top_h": 0.0,
               "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "dynatemp_range": 0.0, "dynatemp_exponent": 1.0}
_NO_LIMIT = 1 << 62


def _warper_used(name: str, off):
    return lambda p: p.sampling and getattr(p, name) != off


# the steps a request may need, each with the test of its params: a step no active request needs is skipped
STEP_USED = {
    "bias": lambda p: bool(p.sequence_bias),
    "penalties": lambda p: p.repetition_penalty != 1.0 or bool(p.frequency_penalty) or bool(p.presence_penalty),
    "repetition_penalty": lambda p: p.repetition_penalty != 1.0,
    "bans": lambda p: bool(p.suppress_tokens or p.bad_words_ids),
    "min_new_tokens": lambda p: bool(p.min_new_tokens),
    "dynatemp": lambda p: p.sampling and bool(p.dynatemp_range),
    **{name: _warper_used(name, off) for name, off in (("top_k", 0), ("top_p", 1.0), ("min_p", 0.0),
                                                       ("typical_p", 1.0), ("top_h", 0.0), ("epsilon_cutoff", 0.0),
                                                       ("eta_cutoff", 0.0))},
}


class SlotTable:
    """Device tensors of every slot's parameters and token state, and the host's view of the active requests."""

    def __init__(self, max_slots: int, vocab_size: int, device, eos_token_id):
        self.max_slots, self.vocab, self.device = max_slots, vocab_size, device
        self.default_eos = eos_token_id
        self.params = {name: torch.zeros(max_slots, dtype=dtype, device=device) for name, dtype in _PER_SLOT.items()}
        self.generated = torch.zeros(max_slots, dtype=torch.int64, device=device)  # tokens appended per slot
        self.length = torch.zeros(max_slots, dtype=torch.int64, device=device)  # prompt + appended, in history
        self.counts = self.prompt_mask = self.ban = self.eos = self.history = self.word_member = None
        self._bias = None  # (slots, tokens, values) of every active one-token bias, rebuilt when slots change
        self.words: list[tuple[tuple[int, ...], int]] = []  # multi-token bad words of all slots: (prefix, last)
        self.word_prefixes: list[torch.Tensor] = []
        self.active: dict[int, SamplingParams] = {}
        self._uses: dict[str, bool] | None = None

    # ---- host side: requests join and leave ----
    def add(self, slot: int, params: SamplingParams, prompt: torch.Tensor, sequence_index: int) -> None:
        self.remove(slot)
        if params.sequence_bias and any(len(ids) > 1 for ids, _ in params.sequence_bias):
            raise NotImplementedError("Sampler supports one-token sequence_bias entries (logit_bias); multi-token "
                                      "sequences need pydecode.generate")
        values = self._slot_values(params, sequence_index)
        for name, value in values.items():
            self.params[name][slot] = value
        self.generated[slot] = 0
        self.length[slot] = prompt.shape[0]
        eos = self._eos_of(params)
        if STEP_USED["penalties"](params):
            self._ensure("counts")[slot] = 0
            self._ensure("prompt_mask")[slot] = prompt_token_mask(prompt[None], self.vocab)[0]
        elif self.counts is not None:
            self.counts[slot] = 0
            self.prompt_mask[slot] = False
        single = [w[0] for w in params.bad_words_ids or () if len(w) == 1 and w[0] not in eos]  # eos is never banned so
        banned = single + list(params.suppress_tokens or ())
        self._set_row("ban", slot, banned, True)
        self._check_tokens([ids[0] for ids, _ in params.sequence_bias or ()])
        self._set_row("eos", slot, eos, True)
        if params.no_repeat_ngram_size or any(len(w) > 1 for w in params.bad_words_ids or ()):
            self._store_prompt(slot, prompt, params)
        self.active[slot] = params
        self._uses = self._bias = None
        self._set_words(slot, params)

    def remove(self, slot: int) -> None:
        self.active.pop(slot, None)
        self._uses = self._bias = None
        if self.word_member is not None:
            self.word_member[slot] = False

    def uses(self, step: str) -> bool:
        """Whether any active request needs ``step`` (a key of :data:`STEP_USED`); cached until slots change."""
        if self._uses is None:
            self._uses = {name: any(test(p) for p in self.active.values()) for name, test in STEP_USED.items()}
        return self._uses[step]

    def ngram_sizes(self) -> set[int]:
        return {p.no_repeat_ngram_size for p in self.active.values() if p.no_repeat_ngram_size}

    def _slot_values(self, params: SamplingParams, sequence_index: int) -> dict:
        values = {name: getattr(params, name) for name in _PER_SLOT if name in _WARPER_OFF}
        if not params.sampling:
            values.update(_WARPER_OFF)  # greedy: temperature 0 selects the argmax, the warpers are off
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        values.update(
            repetition_penalty=params.repetition_penalty, frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty, seed=_wrap_int64(seed + sequence_index * _SEED_STRIDE),
            min_new_tokens=params.min_new_tokens, no_repeat_ngram_size=params.no_repeat_ngram_size,
            max_new_tokens=_NO_LIMIT if params.max_new_tokens is None else params.max_new_tokens)
        return values

    def _eos_of(self, params: SamplingParams) -> list[int]:
        eos = params.eos_token_id if params.eos_token_id is not None else self.default_eos
        eos = list(eos or ())
        if any(t >= self.vocab for t in eos):
            raise ValueError(f"eos_token_id must hold token ids in [0, {self.vocab}), got {eos}")
        return eos

    def _ensure(self, name: str) -> torch.Tensor:
        if getattr(self, name) is None:
            dtype = torch.int32 if name == "counts" else torch.bool
            setattr(self, name, torch.zeros(self.max_slots, self.vocab, dtype=dtype, device=self.device))
        return getattr(self, name)

    def _check_tokens(self, tokens: list[int]) -> None:
        if any(not 0 <= t < self.vocab for t in tokens):
            raise ValueError(f"token ids of bad_words_ids, suppress_tokens and sequence_bias must lie in "
                             f"[0, {self.vocab}), got {tokens}")

    def _set_row(self, table: str, slot: int, tokens: list[int], value) -> None:
        self._check_tokens(tokens)
        if not tokens:
            if getattr(self, table) is not None:
                getattr(self, table)[slot] = 0
            return
        row = self._ensure(table)[slot]
        row.zero_()
        row[torch.tensor(tokens, device=self.device)] = torch.tensor(value, dtype=row.dtype, device=self.device)

    def _store_prompt(self, slot: int, prompt: torch.Tensor, params: SamplingParams) -> None:
        if params.max_new_tokens is None:
            raise ValueError("no_repeat_ngram_size and multi-token bad_words_ids need max_new_tokens set in the "
                             "Sampler (the slot's token history is allocated for it)")
        need = prompt.shape[0] + params.max_new_tokens
        if self.history is None or self.history.shape[1] < need:
            grown = torch.zeros(self.max_slots, need, dtype=torch.int64, device=self.device)
            if self.history is not None:
                grown[:, : self.history.shape[1]] = self.history
            self.history = grown
        self.history[slot, : prompt.shape[0]] = prompt

    def _set_words(self, slot: int, params: SamplingParams) -> None:
        for word in params.bad_words_ids or ():
            if len(word) > 1 and (word[:-1], word[-1]) not in self.words:
                self.words.append((word[:-1], word[-1]))
                self.word_prefixes.append(torch.tensor(word[:-1], dtype=torch.int64, device=self.device))
        if not self.words:
            return
        if self.word_member is None or self.word_member.shape[1] < len(self.words):
            grown = torch.zeros(self.max_slots, len(self.words), dtype=torch.bool, device=self.device)
            if self.word_member is not None:
                grown[:, : self.word_member.shape[1]] = self.word_member
            self.word_member = grown
        own = {(w[:-1], w[-1]) for w in params.bad_words_ids or () if len(w) > 1}
        self.word_member[slot] = torch.tensor([w in own for w in self.words], device=self.device)

    # ---- device side: per step ----
    def gather(self, name: str, slots: torch.Tensor) -> torch.Tensor:
        return self.params[name].index_select(0, slots)

    def row_params(self, slots: torch.Tensor, seeds: torch.Tensor) -> RowParams:
        """The rows' parameters: (N,) tensors, or the "off" scalar of a step no active request uses (the fast
        kernels specialise on scalars; typical-p and the cutoffs run on the reference path only when used)."""
        def value(name: str, off, step: str | None = None):
            return self.gather(name, slots) if self.uses(step or name) else off

        return RowParams(
            temperature=self.gather("temperature", slots), top_k=value("top_k", 0), top_p=value("top_p", 1.0),
            min_p=value("min_p", 0.0), typical_p=value("typical_p", 1.0), top_h=value("top_h", 0.0),
            epsilon_cutoff=value("epsilon_cutoff", 0.0), eta_cutoff=value("eta_cutoff", 0.0),
            repetition_penalty=value("repetition_penalty", 1.0, "penalties"),
            frequency_penalty=value("frequency_penalty", 0.0, "penalties"),
            presence_penalty=value("presence_penalty", 0.0, "penalties"), seeds=seeds, do_sample=True,
            dynatemp_range=value("dynatemp_range", 0.0, "dynatemp"),
            dynatemp_exponent=value("dynatemp_exponent", 1.0, "dynatemp"))

    def steps(self, slots: torch.Tensor, params: RowParams, backend) -> list[Processor]:
        """The processors the rows' requests need, over their gathered parameters and state, in the list's order
        (the ban table holds one-token bad words and ``suppress_tokens``: it runs at the former's place)."""
        steps: list[Processor] = []
        if self.uses("bias"):
            if self._bias is None:
                entries = [(slot, ids[0], bias) for slot, p in self.active.items()
                           for ids, bias in p.sequence_bias or ()]
                self._bias = tuple(torch.tensor(column, device=self.device) for column in zip(*entries))
            entry_slots, tokens, values = self._bias
            steps.append(TokenBias(slots[:, None] == entry_slots[None, :], tokens, values))
        if self.uses("penalties"):
            # (N, V) rows of the tables by advanced indexing: several times faster than index_select on CPU
            prompt_mask = self.prompt_mask[slots] if self.uses("repetition_penalty") else None
            steps.append(Penalties.of_rows(params, self.counts[slots], prompt_mask, backend))
        sizes = self.ngram_sizes()
        if sizes:
            row_sizes = self.params["no_repeat_ngram_size"].index_select(0, slots)
            steps += [NoRepeatNgram(n, row_sizes == n) for n in sorted(sizes)]
        if self.words:
            steps.append(BadWords(list(zip(self.word_prefixes, [last for _, last in self.words])),
                                  self.word_member[slots]))
        if self.ban is not None and self.uses("bans"):
            steps.append(OneTokenBadWords(self.ban[slots][:, None]))
        if self.eos is not None and self.uses("min_new_tokens"):
            generated = self.generated.index_select(0, slots)[:, None]
            steps.append(MinLengthEos(self.eos[slots], 0, self.gather("min_new_tokens", slots)[:, None],
                                      self.length.index_select(0, slots)[:, None] - generated))
        return in_order(steps)

    def append(self, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Record accepted tokens (rows of one slot in order); returns (N,) bool: the slot finished with this token
        (one of its eos ids, or ``max_new_tokens`` reached)."""
        earlier = (slots[None, :] == slots[:, None]).tril(-1).sum(1)  # same-slot rows before each row
        if self.counts is not None:
            self.counts.index_put_((slots, tokens), torch.ones_like(tokens, dtype=torch.int32), accumulate=True)
        if self.history is not None:
            at = (self.length.index_select(0, slots) + earlier).clamp(max=self.history.shape[1] - 1)
            self.history.index_put_((slots, at), tokens)
        ones = torch.ones_like(slots)
        self.length.index_put_((slots,), ones, accumulate=True)
        generated = self.generated.index_select(0, slots) + earlier + 1
        self.generated.index_put_((slots,), ones, accumulate=True)
        finished = generated >= self.params["max_new_tokens"].index_select(0, slots)
        if self.eos is not None:
            finished |= self.eos[slots, tokens]
        return finished
