"""``pydecode.Sampler``: the per-step sampling work of :func:`pydecode.generate`, for engines that own the batch.

A serving engine owns the model, the KV cache and a batch whose rows change every step. It registers each request
in a slot (:meth:`Sampler.add_request`), then each step hands the logits and the slot of each row to
:meth:`Sampler.sample` and the accepted tokens to :meth:`Sampler.append`. Each step runs the steps of generate()'s
order that per-request state supports, built from generate()'s own processor classes
(:mod:`pydecode.generation.logits.processors`, where the order is stated) and warper / draw step
(:mod:`pydecode.generation.logits.pipeline`): the one-token biases, the penalties, the bans (``no_repeat_ngram_size``,
``bad_words_ids``, ``suppress_tokens``, eos below ``min_new_tokens``), then on sampling rows the warpers
(temperature, entropy-scaled with ``dynatemp_range``, first) and the draw; greedy rows take the argmax. Logprobs
are those of the logits as given.

The draw of row ``i`` uses the counter-based stream of ``(seed of slots[i], positions[i])``, the one generate()
uses at that step, so a request's tokens depend only on its own seed, prompt and parameters: never on the batch,
the row order or the neighbours. Nothing in :meth:`sample`, :meth:`process` or :meth:`append` reads a device value
back to the host. Stop strings and ``max_time`` are the host's to check (they need text or a clock).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..generation.logits.pipeline import draw, warp
from ..generation.logits.processors import StepView
from ..ops.backends import resolve
from ..ops.logprobs import token_logprobs_unchecked
from ..ops.random import position_seeds
from ..ops.validation import check_logits
from .params import SamplingParams
from .slots import SlotTable

_NEG_INF = float("-inf")


@dataclass
class SampleOutput:
    """What :meth:`Sampler.sample` returns, one entry per row: ``token_ids`` (N,) int64; with ``num_logprobs`` set,
    ``logprobs`` (N,) float32 (log-softmax of the given logits at the token) and, for ``num_logprobs = k > 0``,
    ``top_ids`` / ``top_logprobs`` (N, k) of the k most likely tokens; otherwise those are None."""

    token_ids: torch.Tensor
    logprobs: torch.Tensor | None = None
    top_ids: torch.Tensor | None = None
    top_logprobs: torch.Tensor | None = None


class Sampler:
    """Per-request sampling state in ``max_slots`` slots over a vocabulary of ``vocab_size`` tokens on ``device``.

    Parameters
    ----------
    max_slots : int >= 1, how many requests can be registered at once (slot ids lie in ``[0, max_slots)``)
    vocab_size : int >= 1, the tokenizer's vocabulary; logits may be wider (padded LM heads): the extra columns
        are never drawn
    device : where the per-slot state lives (the logits' device)
    backend : "auto" | "torch" | "cpp" | "triton" | "cuda", bound once here
    sync : None, or "broadcast": after each draw, rank 0's token ids are broadcast to every rank of ``group``
        (``torch.distributed``), for tensor-parallel hosts that want one source of truth (every rank must then
        pass its rows in the same order). Without it, ranks that sample the same gathered logits already pick
        bitwise the same ids, in any row order: the draw depends only on each row's logits, slot and position.
    group : the process group for ``sync`` (None: the default group)
    eos_token_id : int or list, the eos ids of requests whose params set none (stop state, ``min_new_tokens``)
    """

    def __init__(self, max_slots: int, vocab_size: int, device, backend: str = "auto", *, sync: str | None = None,
                 group=None, eos_token_id=None):
        for name, value in (("max_slots", max_slots), ("vocab_size", vocab_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if sync not in (None, "broadcast"):
            raise ValueError(f"sync must be None or 'broadcast', got {sync!r}")
        self.device = torch.device(device)
        self.backend, _ = resolve("top_k_top_p_sample", self.device, backend)
        self.sync, self.group = sync, group
        eos = SamplingParams(eos_token_id=eos_token_id).eos_token_id
        self.slots = SlotTable(max_slots, vocab_size, self.device, eos)
        self.vocab_size = vocab_size

    # ---- requests ----
    def add_request(self, slot: int, params: SamplingParams, prompt_ids, sequence_index: int = 0) -> None:
        """(Re)initialise ``slot`` for a request with ``params`` and its prompt (1-D token ids; the repetition
        penalty and the n-gram bans read it). ``sequence_index`` j picks the j-th of ``num_return_sequences``
        streams, the seed generate() gives that sequence. ``params.seed`` None draws a seed from torch's global
        generator, as generate() does."""
        self._check_slot(slot)
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a pydecode.SamplingParams, got {type(params).__name__}")
        if isinstance(sequence_index, bool) or not isinstance(sequence_index, int) or sequence_index < 0:
            raise ValueError(f"sequence_index must be an integer >= 0, got {sequence_index!r}")
        prompt = torch.as_tensor(prompt_ids).to(self.device, torch.int64).reshape(-1)
        if prompt.numel() and not (0 <= int(prompt.min()) and int(prompt.max()) < self.vocab_size):
            raise ValueError(f"prompt_ids must hold token ids in [0, {self.vocab_size})")
        self.slots.add(slot, params, prompt, sequence_index)

    def remove(self, slot: int) -> None:
        """Free ``slot``: its request no longer takes part (the slot can be reused by :meth:`add_request`)."""
        self._check_slot(slot)
        self.slots.remove(slot)

    # ---- steps ----
    def sample(self, logits: torch.Tensor, slots, positions=None, num_logprobs: int | None = None) -> SampleOutput:
        """Draw one token per row of ``logits`` (N, V >= vocab_size) for the requests in ``slots`` (N,).

        ``positions`` (N,): the index of the token each row draws among its request's generated tokens (default:
        how many were appended so far; pass ``generated + j`` for the j-th draft token of a slot repeated over
        rows). ``num_logprobs``: None for no logprobs, 0 for the drawn tokens' only, k for the top k too.
        """
        if num_logprobs is not None and (isinstance(num_logprobs, bool) or not isinstance(num_logprobs, int)
                                         or num_logprobs < 0):
            raise ValueError(f"num_logprobs must be None or an integer >= 0, got {num_logprobs!r}")
        slots = self._slots(slots, logits)
        if positions is None:
            positions = self.slots.generated.index_select(0, slots)
        else:
            positions = torch.as_tensor(positions, device=self.device)
            if positions.shape != slots.shape:
                raise ValueError(f"positions must have shape {tuple(slots.shape)}, got {tuple(positions.shape)}")
        params = self.slots.row_params(slots, position_seeds(self.slots.gather("seed", slots), positions))
        tokens = draw(self._processed_scores(logits, slots, params), params, params.seeds, 0, self.backend)
        if self.sync == "broadcast":
            torch.distributed.broadcast(tokens, src=0, group=self.group)
        out = SampleOutput(tokens)
        if num_logprobs is not None:
            out.logprobs, top_values, top_ids = token_logprobs_unchecked(logits[:, : self.vocab_size], tokens,
                                                                         num_logprobs, self.backend)
            if num_logprobs:
                out.top_logprobs, out.top_ids = top_values, top_ids
        return out

    def process(self, logits: torch.Tensor, slots) -> torch.Tensor:
        """Apply every step but the draw to float32 ``logits`` (N, V) in place (removed tokens and the columns past
        ``vocab_size`` become ``-inf``; greedy rows get no warpers) and return it, for hosts that draw themselves."""
        if logits.dtype != torch.float32:
            raise TypeError(f"logits must be float32 to be processed in place, got {logits.dtype}")
        slots = self._slots(slots, logits)
        params = self.slots.row_params(slots, self.slots.gather("seed", slots))
        logits[:, : self.vocab_size] = warp(self._processed_scores(logits, slots, params), params)
        logits[:, self.vocab_size:] = _NEG_INF
        return logits

    def append(self, slots, token_ids: torch.Tensor) -> torch.Tensor:
        """Record the accepted tokens (rows of one slot in their order) for the penalties, n-gram bans, positions
        and stop state. Returns (N,) bool: the row's slot finished with this token (an eos id or
        ``max_new_tokens`` reached); the host removes finished requests."""
        slots = self._slots(slots)
        tokens = torch.as_tensor(token_ids, device=self.device).to(torch.int64).reshape(-1)
        if tokens.shape != slots.shape:
            raise ValueError(f"token_ids must have shape {tuple(slots.shape)}, got {tuple(tokens.shape)}")
        return self.slots.append(slots, tokens)

    # ---- helpers ----
    def _processed_scores(self, logits: torch.Tensor, slots: torch.Tensor, params) -> torch.Tensor:
        """generate()'s processors that the rows' requests need, on a float32 copy of the first ``vocab_size``
        columns; (N, vocab_size)."""
        table = self.slots
        scores = logits[:, None, : self.vocab_size].to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        at = table.length.index_select(0, slots)[:, None]  # (N, 1): the history index each row predicts
        view = StepView(None if table.history is None else table.history[slots], at, at[:, 0])
        for step in table.steps(slots, params, self.backend):
            scores = step.apply(scores, view)
        return scores[:, 0]

    def _slots(self, slots, logits: torch.Tensor | None = None) -> torch.Tensor:
        slots = torch.as_tensor(slots, device=self.device).to(torch.int64).reshape(-1)
        if logits is not None:
            check_logits(logits)
            if logits.shape[0] != slots.shape[0]:
                raise ValueError(f"slots must hold one slot per row of logits ({logits.shape[0]}), "
                                 f"got {slots.shape[0]}")
            if logits.shape[1] < self.vocab_size:
                raise ValueError(f"logits must have at least vocab_size = {self.vocab_size} columns, "
                                 f"got {logits.shape[1]}")
        return slots

    def _check_slot(self, slot) -> None:
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.slots.max_slots:
            raise ValueError(f"slot must be an integer in [0, {self.slots.max_slots}), got {slot!r}")

