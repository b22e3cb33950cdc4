"""A KIVI cache of fixed shapes for ``generate(..., compile=True)``: every decoding step is one graph, never resized.

:class:`StaticKiviLayer` keeps :class:`~.kivi.KiviLayer`'s layout and its packing moments, with shapes fixed:

- the packed stores are preallocated for the whole bucket (plus one spare group) and the residual for the sinks plus
  ``max(R, G)`` recent tokens;
- the token counts (``n_quant``, ``n_residual``, ``n_sink``) are tensors, so no step reads them on the host;
- each step appends its token to the residual with ``index_copy_`` at the ``n_residual`` position, attends over the
  whole store and residual with a mask that hides the unused slots (``kivi_attention`` skips masked tokens), then
  packs the oldest group of recent tokens and commits it only where the residual holds ``max(R, G)`` of them
  (``torch.where``): the moment :meth:`KiviLayer.flush` packs at.

The prompt's forward runs eagerly (:meth:`StaticKiviLayer.prefill`): it chooses the sinks from the padding and packs
the prompt as the eager flush does (host syncs are fine there). Positions and storage are ordered as in
:mod:`.kivi`: storage holds packed tokens, then the residual (sinks, recent).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, get_layer_types_and_kwargs

from ..ops.backends import resolve
from ..ops.kivi import DEFAULT_SINK_LENGTH, validate_kivi_config
from .kivi import _PACKED_FIELDS, KiviCache, KiviLayer, _round_up, flush_count, pack_tokens, sink_prefix

RESIDUAL_ROUNDING = 64  # residual slots grow in steps of this (a new shape compiles the step once more)


@dataclass
class StaticKiviHandle:
    """What ``StaticKiviLayer.update`` returns as "keys" and "values": the layer, and this forward's keys/values
    when it is the prompt's (None for a decoding step, whose token is already in the residual)."""

    layer: "StaticKiviLayer"
    prompt_keys: torch.Tensor | None
    prompt_values: torch.Tensor | None


class StaticKiviLayer(CacheLayerMixin):
    """One full-attention layer's KIVI cache with fixed shapes (see the module docstring); the settings are
    :class:`~.kivi.KiviLayer`'s, ``max_cache_len`` the positions of the bucket."""

    is_sliding = False
    is_compileable = True
    is_croppable = False

    def __init__(self, nbits: int, group_size: int, residual_length: int, max_cache_len: int,
                 backend: str | None = None, sink_length: int = DEFAULT_SINK_LENGTH, key_clipping: bool = True):
        super().__init__()
        validate_kivi_config(nbits, group_size, residual_length, sink_length=sink_length, key_clipping=key_clipping)
        self.nbits, self.group_size, self.residual_length = nbits, group_size, residual_length
        self.max_cache_len, self.backend = max_cache_len, backend
        self.sink_length, self.key_clipping = sink_length, key_clipping
        self.recent_capacity = max(residual_length, group_size)  # recent tokens held when a flush commits
        self.capacity = _round_up(max_cache_len, group_size) + group_size  # spare group: the uncommitted pack's slot
        self.prefilled = False

    # --- transformers' layer API ---------------------------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        validate_kivi_config(self.nbits, self.group_size, self.residual_length, head_dim=d)
        self.dtype, self.device = key_states.dtype, key_states.device
        self.meta_dtype = torch.float32 if self.dtype == torch.float32 else torch.float16
        self.batch_size, self.num_heads, self.head_dim = b, h, d
        f, g, cap = 32 // self.nbits, self.group_size, self.capacity
        shapes = {
            "key_codes": (cap // f, d), "key_scale": (cap // g, d), "key_zero": (cap // g, d),
            "value_codes": (cap, d // f), "value_scale": (cap, d // g), "value_zero": (cap, d // g),
        }
        for name, _ in _PACKED_FIELDS:
            dtype = torch.int32 if name.endswith("codes") else self.meta_dtype
            setattr(self, name, torch.zeros(b, h, *shapes[name], dtype=dtype, device=self.device))
        self.n_quant, self.n_residual, self.n_sink = (torch.zeros((), dtype=torch.long, device=self.device)
                                                      for _ in range(3))
        self._allocate_residual(self.sink_length + self.recent_capacity)
        self.is_initialized = True
        for tensor in self._tensors():
            # a fixed data pointer: CUDA graphs replay the step on these buffers without copying them
            torch._dynamo.mark_static_address(tensor)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """The prompt's forward: hand its keys/values to the attention (which calls :meth:`prefill`). A decoding
        step: append its ``(B, H, 1, D)`` token to the residual. Returns ``(handle, handle)``."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if not self.prefilled:
            handle = StaticKiviHandle(self, key_states, value_states)
            return handle, handle
        at = self.n_residual.view(1)
        self.residual_keys.index_copy_(2, at, key_states)
        self.residual_values.index_copy_(2, at, value_states)
        self.n_residual += 1
        handle = StaticKiviHandle(self, None, None)
        return handle, handle

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.max_cache_len, 0

    def get_seq_length(self):
        return self.n_quant + self.n_residual if self.is_initialized else 0

    def get_max_length(self) -> int:
        return self.max_cache_len

    def reset(self) -> None:
        """Empty the cache for the next call (the buffers and the compiled step's shapes stay)."""
        self.prefilled = False
        if self.is_initialized:
            for counter in (self.n_quant, self.n_residual, self.n_sink):
                counter.zero_()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a KIVI cache cannot be cropped: quantized tokens cannot be restored exactly")

    # --- KIVI ----------------------------------------------------------------------------------------------------
    def prefill(self, keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None) -> None:
        """Store the prompt's ``keys``/``values (B, H, L, D)`` as :meth:`KiviLayer.flush` would after the prompt's
        forward: sinks chosen from ``valid (B, L)`` (False = padding), whole groups packed, the rest exact."""
        for op in ("kivi_pack", "kivi_attention"):
            resolve(op, self.device, self.backend)  # the traced step reads the backend an eager call resolved
        length = keys.shape[2]
        s = sink_prefix(self.sink_length, valid)
        n = flush_count(length - s, self.group_size, self.residual_length)
        if s + self.recent_capacity > self.residual_keys.shape[2]:
            self._allocate_residual(s + self.recent_capacity)
            torch._dynamo.mark_static_address(self.residual_keys)
            torch._dynamo.mark_static_address(self.residual_values)
        if n:
            token_valid = None if valid is None else valid[:, s:s + n]
            packed = pack_tokens(keys[:, :, s:s + n], values[:, :, s:s + n], token_valid, self)
            f, g = 32 // self.nbits, self.group_size
            for (name, unit), src in zip(_PACKED_FIELDS, packed):
                step = {"word": f, "group": g, "token": 1}[unit]
                getattr(self, name)[:, :, :n // step] = src
        for buffer, source in ((self.residual_keys, keys), (self.residual_values, values)):
            buffer[:, :, :min(s, length)] = source[:, :, :s]
            buffer[:, :, s:length - n] = source[:, :, s + n:]
        self.n_quant.fill_(n)
        self.n_residual.fill_(length - n)
        self.n_sink.fill_(s)  # a prompt shorter than s: the next tokens are sinks too, as in KiviLayer
        self.prefilled = True

    def storage_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """``(B, capacity + residual slots)`` bool in storage order from ``valid (B, positions)`` over positions
        (False = padding or not yet written): the unused slots of the store and the residual are False."""
        packed_slots = torch.arange(self.capacity, device=valid.device)
        residual_slots = torch.arange(self.residual_keys.shape[2], device=valid.device)
        s, q = self.n_sink, self.n_quant
        positions = torch.cat([packed_slots + s, torch.where(residual_slots < s, residual_slots,
                                                             residual_slots + q)])
        used = torch.cat([packed_slots < q, residual_slots < self.n_residual])
        last = valid.shape[1] - 1
        return used & valid.index_select(1, positions.clamp(max=last))

    def flush(self, valid: torch.Tensor) -> None:
        """Pack the oldest ``G`` recent tokens and commit them where the residual holds ``max(R, G)`` recent ones
        (the moment of :meth:`KiviLayer.flush` in decoding); ``valid (B, positions)`` leaves padding (which the first
        groups hold when there are no sinks) out of the key ranges."""
        g, f = self.group_size, 32 // self.nbits
        commit = (self.n_residual - self.n_sink) == self.recent_capacity
        oldest = self.n_sink + torch.arange(g, device=self.device)
        positions = (oldest + self.n_quant).clamp(max=valid.shape[1] - 1)
        packed = pack_tokens(self.residual_keys.index_select(2, oldest), self.residual_values.index_select(2, oldest),
                             valid.index_select(1, positions), self)
        for (name, unit), src in zip(_PACKED_FIELDS, packed):
            step = {"word": f, "group": g, "token": 1}[unit]
            store = getattr(self, name)
            at = self.n_quant // step + torch.arange(g // step, device=self.device)
            store.index_copy_(2, at, torch.where(commit, src, store.index_select(2, at)))
        # close the gap behind the sinks: slot i takes slot i + G from the sinks on
        slots = torch.arange(self.residual_keys.shape[2], device=self.device)
        moved = torch.where(commit & (slots >= self.n_sink), slots + g, slots).clamp(max=slots.shape[0] - 1)
        for buffer in (self.residual_keys, self.residual_values):
            buffer.copy_(buffer.index_select(2, moved))
        shift = commit.long() * g
        self.n_quant += shift
        self.n_residual -= shift

    def packed(self) -> tuple[torch.Tensor, ...]:
        """The six packed stores (``capacity`` tokens each)."""
        return tuple(getattr(self, name) for name, _ in _PACKED_FIELDS)

    def _allocate_residual(self, slots: int) -> None:
        slots = _round_up(slots, RESIDUAL_ROUNDING)
        shape = (self.batch_size, self.num_heads, slots, self.head_dim)
        # zeros, not empty: unused slots are masked, and a masked NaN would still poison the weighted sum
        self.residual_keys = torch.zeros(shape, dtype=self.dtype, device=self.device)
        self.residual_values = torch.zeros(shape, dtype=self.dtype, device=self.device)

    def _tensors(self) -> list[torch.Tensor]:
        return [self.residual_keys, self.residual_values, self.n_quant, self.n_residual, self.n_sink,
                *self.packed()]


class StaticKiviCache(Cache):
    """A transformers ``Cache`` of :class:`StaticKiviLayer` (every layer full attention) for a compiled step."""

    def __init__(self, config, max_cache_len: int, nbits: int = 4, group_size: int = 32, residual_length: int = 128,
                 backend: str | None = None, sink_length: int = DEFAULT_SINK_LENGTH, key_clipping: bool = True):
        layer_types, _ = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
        if any(layer_type != "full_attention" for layer_type in layer_types):
            raise NotImplementedError("compile=True runs the KIVI cache on models whose layers all use full "
                                      f"attention, not {sorted(set(layer_types) - {'full_attention'})} layers")
        super().__init__(layers=[
            StaticKiviLayer(nbits, group_size, residual_length, max_cache_len, backend, sink_length, key_clipping)
            for _ in layer_types
        ])

    @classmethod
    def like(cls, cache: KiviCache, config, max_cache_len: int) -> StaticKiviCache:
        """The static cache with ``cache``'s KIVI settings (bits, group, residual, sinks, clipping, backend)."""
        return cls(config, max_cache_len, *settings(cache))


def settings(cache: KiviCache) -> tuple:
    """``(nbits, group_size, residual_length, backend, sink_length, key_clipping)`` of a cache's KIVI layers: what
    a compiled step of that cache is built for."""
    layer = next(layer for layer in cache.layers if isinstance(layer, KiviLayer))
    return (layer.nbits, layer.group_size, layer.residual_length, layer.backend, layer.sink_length,
            layer.key_clipping)
