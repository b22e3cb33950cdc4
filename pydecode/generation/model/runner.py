"""The model step shared by every strategy: prefill the prompt, then feed one token per row per step.

Inputs are built as transformers' generate builds them (position ids from the attention mask, the mask dropped when
it has no padding, logits of the last position only), so the logits match ``model.generate`` bit for bit.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from ...cache import KiviCache
from .compat import USER_CACHE_KWARGS, cache_argument
from .compiled import mask_for_compiled_step
from .grouped_attention import ATTENTION_NAME as GROUPED_SDPA
from .no_cache import TokenHistory, full_positions
from .positional import PositionalInputs
from .preallocated_cache import PreallocatedLayer, mark_shared_prefix, preallocate
from .slot_mask import SlotMask

_MANAGED = ("input_ids", "attention_mask", "position_ids", *USER_CACHE_KWARGS, "use_cache", "cache_position")


class ModelRunner(SlotMask):
    """Runs a decoder-only model over its KV cache.

    ``attention_mask`` (B, L0) may be None (no padding). ``max_length`` sizes the preallocated mask buffer.
    ``cache`` defaults to a ``DynamicCache`` whose layers are preallocated for ``max_length`` tokens; pass another
    transformers Cache (e.g. a KIVI cache) to use it.
    ``expand`` is how many consecutive rows repeat each prompt (beams, return sequences): the prefill runs once per
    prompt where the cache can be repeated after it. ``prefill_chunk`` (transformers' ``prefill_chunk_size``), if
    set, runs the prompt in forwards of that many tokens, as transformers does (the prefill's outputs are then the
    last chunk's). ``prompt_embeds`` (rows, L0, H), if given, is what the prefill feeds instead of the prompt's ids.
    """

    def __init__(self, model, *, attention_mask, batch: int, prompt_len: int, max_length: int, device, cache=None,
                 model_kwargs=None, expand: int = 1, prefill_chunk: int | None = None, prompt_embeds=None):
        self.model = model
        self.expand = expand
        self.prefill_chunk = prefill_chunk
        self.prompt_embeds = prompt_embeds
        self.cache = cache if cache is not None else preallocate(DynamicCache(config=model.config), max_length)
        model_kwargs = {k: v for k, v in (model_kwargs or {}).items() if k not in _MANAGED}
        self.positional = PositionalInputs.take(model_kwargs, batch, expand, prompt_len)
        self.model_kwargs = model_kwargs
        params = inspect.signature(model.forward).parameters
        if "logits_to_keep" in params and "logits_to_keep" not in self.model_kwargs:
            self.model_kwargs["logits_to_keep"] = 1
        self.takes_position_ids = "position_ids" in params
        self.decode_forward = None  # the model's compiled call for decoding steps, when transformers would use one
        self.cache_argument = cache_argument(model)
        self.length = prompt_len
        has_padding = attention_mask is not None and not bool((attention_mask == 1).all())  # one read, at set-up
        if has_padding:
            self.mask = torch.ones(batch, max_length, dtype=attention_mask.dtype, device=device)
            self.mask[:, :prompt_len] = attention_mask
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        else:
            self.mask = None
            positions = torch.arange(prompt_len, device=device).unsqueeze(0).expand(batch, -1)
        self.positions = positions.to(device)

    def _forward(self, input_ids: torch.Tensor, **forward_kwargs):
        kwargs = dict(self.model_kwargs)
        if self.takes_position_ids:
            kwargs["position_ids"] = self.positions
        if self.mask is not None:
            kwargs["attention_mask"] = self.mask[:, : self.length]
        if self.positional is not None:
            kwargs.update(self.positional.window(self.length - input_ids.shape[1], input_ids.shape[1]))
        kwargs.update(forward_kwargs)
        return self._call(input_ids, kwargs)

    def _call(self, inputs: torch.Tensor, kwargs: dict):
        """The model on ``inputs``: token ids (B, T), or embeddings (B, T, H)."""
        if isinstance(self.cache, TokenHistory):
            return self._call_without_cache(inputs, kwargs)
        kwargs[self.cache_argument] = self.cache
        kwargs["inputs_embeds" if inputs.dim() == 3 else "input_ids"] = inputs
        return self.model(use_cache=True, return_dict=True, **kwargs)

    def _call_without_cache(self, inputs: torch.Tensor, kwargs: dict):
        """``use_cache=False``: the model on the whole sequence so far (``inputs`` appended to it), as transformers
        runs it; ``kwargs``' mask already spans it, positions and per-position inputs are widened to it."""
        ids = self.cache.extend(inputs)
        rows, total = ids.shape
        if self.takes_position_ids:
            kwargs["position_ids"] = full_positions(kwargs.get("attention_mask"), rows, total, ids.device)
        if self.positional is not None:
            kwargs.update(self.positional.window(0, total))
        return self.model(input_ids=ids, use_cache=False, return_dict=True, **kwargs)

    def prefill(self, input_ids: torch.Tensor, **forward_kwargs):
        """Run the whole prompt (B, L0); returns the model output (``.logits`` of the last position).

        ``forward_kwargs`` (e.g. ``output_hidden_states=True``) go to the model's forward. When each prompt fills
        ``expand`` rows, only the first of them runs; the cache and the output's tensors are then repeated.
        """
        if self.prompt_embeds is not None:
            input_ids, self.prompt_embeds = self.prompt_embeds, None
        cached = self._cached_prefix(input_ids.shape[1])
        if cached:  # a cache the caller filled: feed only the positions it does not hold yet
            input_ids, self.positions = input_ids[:, cached:], self.positions[:, cached:]
        if not self._can_share_prefill():
            return self._prefill_forward(input_ids, forward_kwargs)
        first = slice(None, None, self.expand)
        if self.takes_position_ids:
            forward_kwargs.setdefault("position_ids", self.positions[first])
        if self.mask is not None:
            forward_kwargs.setdefault("attention_mask", self.mask[first, : self.length])
        if self.positional is not None:
            for name, value in self.positional.window(0, self.length, first).items():
                forward_kwargs.setdefault(name, value)
        outputs = self._prefill_forward(input_ids[first], forward_kwargs)
        self.cache.batch_repeat_interleave(self.expand)
        mark_shared_prefix(self.cache, self.length)
        for name, value in outputs.items():
            if isinstance(value, torch.Tensor):
                outputs[name] = value.repeat_interleave(self.expand, dim=0)
            elif isinstance(value, tuple) and all(isinstance(v, torch.Tensor) for v in value):
                outputs[name] = tuple(v.repeat_interleave(self.expand, dim=0) for v in value)
        return outputs

    def _prefill_forward(self, input_ids: torch.Tensor, forward_kwargs: dict):
        """The prompt's forward (ids, or embeddings (B, L, H)), or its forwards chunk by chunk (each with the
        positions of its tokens and the mask up to its end); returns the (last) output."""
        length, size = input_ids.shape[1], self.prefill_chunk
        if not size or length <= size:
            return self._forward(input_ids, **forward_kwargs)
        offset = self.length - length  # positions a caller's cache already holds
        positions = forward_kwargs.pop("position_ids", self.positions if self.takes_position_ids else None)
        mask = forward_kwargs.pop("attention_mask", self.mask[:, : self.length] if self.mask is not None else None)
        per_position = self.positional.window(offset, length) if self.positional is not None else {}
        per_position.update({name: forward_kwargs.pop(name) for name in per_position if name in forward_kwargs})
        for start in range(0, length, size):
            end = min(start + size, length)
            kwargs = dict(self.model_kwargs, **forward_kwargs)
            kwargs.update({name: value[..., start:end] for name, value in per_position.items()})
            if positions is not None:
                kwargs["position_ids"] = positions[:, start:end]
            if mask is not None:
                kwargs["attention_mask"] = mask[:, : offset + end]
            outputs = self._call(input_ids[:, start:end], kwargs)
        return outputs

    def step(self, tokens: torch.Tensor, **forward_kwargs):
        """Feed each row's new token (B,) and return the model output for the next position."""
        self.positions = self.positions[:, -1:] + 1
        self.length += 1
        if self.mask is not None:  # a mask made for holes (forward_block) may end at the previous length
            self._reserve_mask(self.length)
        if self.decode_forward is not None:
            return self._compiled_step(tokens[:, None], forward_kwargs)
        return self._forward(tokens[:, None], **forward_kwargs)

    def _compiled_step(self, tokens: torch.Tensor, forward_kwargs: dict):
        """One decoding step through the model's compiled call, with the 4D mask transformers builds for it."""
        kwargs = dict(self.model_kwargs)
        if self.takes_position_ids:
            kwargs["position_ids"] = self.positions
        if self.positional is not None:
            kwargs.update(self.positional.window(self.length - 1, 1))
        kwargs.update(forward_kwargs)
        mask = self.mask[:, : self.length] if self.mask is not None else None
        kwargs["attention_mask"] = mask_for_compiled_step(self.model, self.cache, mask, kwargs.get("position_ids"),
                                                          *tokens.shape, tokens.device)
        kwargs[self.cache_argument] = self.cache
        return self.decode_forward(input_ids=tokens, use_cache=True, return_dict=True, **kwargs)

    def step_candidates(self, tokens: torch.Tensor, **forward_kwargs) -> CandidateStep:
        """Feed K candidate next tokens per row (B, K), all at the next position; keep none of them yet.

        On a plain ``DynamicCache`` with eager or SDPA attention the K candidates ride in the query dimension of one
        (B, K) forward, each seeing the history and itself only (a 4D mask), so the history is never copied; other
        caches are repeated K times along the batch, as transformers does. Follow with :meth:`keep_candidate`.
        """
        batch, k = tokens.shape
        past = self.length
        position = self.positions[:, -1:] + 1
        kwargs = dict(self.model_kwargs, **forward_kwargs)
        per_position = self.positional.window(past, 1) if self.positional is not None else {}
        if self._candidates_in_query():
            if "logits_to_keep" in kwargs:
                kwargs["logits_to_keep"] = 0
            kwargs.update({name: value.expand(*value.shape[:-1], k) for name, value in per_position.items()})
            if self.takes_position_ids:
                kwargs["position_ids"] = position.expand(batch, k)
            kwargs["attention_mask"] = self._candidate_mask(batch, k, past)
            out = self._call(tokens, kwargs)
            return CandidateStep(out, True, batch, k, past)
        self.cache.batch_repeat_interleave(k)
        kwargs.update({name: value.repeat_interleave(k, dim=0) for name, value in per_position.items()})
        if self.takes_position_ids:
            kwargs["position_ids"] = position.repeat_interleave(k, dim=0)
        if self.mask is not None:
            kwargs["attention_mask"] = self.mask[:, : past + 1].repeat_interleave(k, dim=0)
        out = self._call(tokens.reshape(-1, 1), kwargs)
        return CandidateStep(out, False, batch, k, past)

    def keep_candidate(self, step: CandidateStep, index: torch.Tensor) -> None:
        """Keep candidate ``index[b]`` (B,) of each row in the cache, as if it had been fed by :meth:`step`."""
        rows = torch.arange(step.batch, device=index.device)
        if step.in_query:
            for layer in self.cache.layers:
                for name in ("keys", "values"):
                    states = getattr(layer, name)  # (B, heads, past + K, head_dim)
                    states[:, :, step.past] = states[rows, :, step.past + index]
                    setattr(layer, name, states[:, :, : step.past + 1])
        else:
            self.cache.batch_select_indices(rows * step.k + index)
        self.positions = self.positions[:, -1:] + 1
        self.length += 1

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a 1-D index tensor) of the batch: the cache, positions and mask shrink with it."""
        self.cache.batch_select_indices(rows)
        self.positions = self.positions[rows]
        if self.mask is not None:
            self.mask = self.mask[rows]
        if self.positional is not None:
            self.positional.select_rows(rows)

    def forward_block(self, tokens: torch.Tensor, valid: torch.Tensor, **forward_kwargs):
        """Feed T tokens per row (B, T) in one forward and return the logits of all T positions.

        ``valid`` (B, T) bool marks the real tokens; the others become holes that no later query attends to. Each
        row's positions advance by its count of valid tokens. Drop rejected tokens after with :meth:`keep_last`.
        """
        t = tokens.shape[1]
        self._reserve_mask(self.length + t)
        self.mask[:, self.length: self.length + t] = valid
        self.positions = self.positions[:, -1:] + valid.long().cumsum(-1)
        self.length += t
        if "logits_to_keep" in self.model_kwargs:
            forward_kwargs.setdefault("logits_to_keep", 0)
        return self._forward(tokens, **forward_kwargs)

    def keep_last(self, t: int, keep: torch.Tensor, longest: int) -> None:
        """:meth:`SlotMask.keep_last`, then each row's next position follows its kept slots."""
        super().keep_last(t, keep, longest)
        self.positions = self.mask[:, : self.length].sum(-1, keepdim=True) - 1

    def _mask_rows(self):
        return self.positions.shape[0], self.positions.device

    def _cached_prefix(self, length: int) -> int:
        """How many of the prompt's ``length`` positions a cache given by the caller already holds (0 for a fresh
        cache); transformers feeds only the others."""
        cached = self.cache.get_seq_length()
        if cached >= length:
            raise ValueError(f"the cache passed to generate already holds {cached} positions, the whole prompt of "
                             f"{length}: pass the prompt with at least one position the cache does not hold")
        return cached

    def _can_share_prefill(self) -> bool:
        """Rows repeat prompts and the (still empty) cache repeats every layer's state: dense or sliding-window
        keys/values, or KIVI's packed store and residual. Other caches (static, linear attention) prefill every row."""
        if self.expand == 1 or self.cache.get_seq_length() > 0:
            return False
        if isinstance(self.cache, KiviCache):
            return True
        return type(self.cache) is DynamicCache and all(
            type(layer) in (DynamicLayer, PreallocatedLayer, DynamicSlidingWindowLayer) for layer in self.cache.layers)

    def _candidates_in_query(self) -> bool:
        attn = getattr(self.model.config, "_attn_implementation", None)
        return (type(self.cache) is DynamicCache and attn in ("eager", "sdpa", GROUPED_SDPA)
                and all(type(layer) in (DynamicLayer, PreallocatedLayer) for layer in self.cache.layers))

    def _candidate_mask(self, batch: int, k: int, past: int) -> torch.Tensor:
        """Additive mask (B, 1, K, past + K): the history's padding, and candidate j sees itself among the K."""
        device, dtype = self.positions.device, self.model.dtype
        allowed = torch.ones(batch, k, past + k, dtype=torch.bool, device=device)
        if self.mask is not None:
            allowed[:, :, :past] = self.mask[:, None, :past].bool()
        allowed[:, :, past:] = torch.eye(k, dtype=torch.bool, device=device)
        additive = torch.zeros(allowed.shape, dtype=dtype, device=device)
        return additive.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


@dataclass
class CandidateStep:
    """A forward over K candidates per row: ``outputs`` and how to read it (see :meth:`ModelRunner.step_candidates`).

    :meth:`rows` turns an output tensor with one position per candidate into (B, K, ...).
    """

    outputs: object
    in_query: bool
    batch: int
    k: int
    past: int

    def rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """(B, K, ...) view of a (B, K, ...) [candidates in the query] or (B * K, 1, ...) [repeated cache] tensor."""
        return tensor if self.in_query else tensor.reshape(self.batch, self.k, *tensor.shape[2:])
