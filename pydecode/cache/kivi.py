"""KIVI KV cache for unmodified transformers models: packed 2/4-bit history plus a full-precision residual window.

Per full-attention layer, :class:`KiviLayer` holds keys quantized per channel (groups of ``G`` tokens) and values per
token (groups of ``G`` channels), packed into preallocated int32 stores that grow geometrically only when full, plus
a full-precision residual. The residual holds, in this order, the first ``sink_length`` tokens of the sequence
(attention sinks: the tokens that draw most of the attention and carry outlier keys, kept exact for good) and the most
recent tokens. ``update`` only appends to the residual and returns a :class:`KiviHandle` in place of the key/value
tensors; the ``"kivi"`` attention function (:mod:`.kivi_attention`) reads the packed store and the residual through
it, then calls :meth:`KiviLayer.flush`, which quantizes the oldest whole groups of recent tokens once there are ``R``
or more (it keeps ``R - G`` to ``R - 1`` recent tokens exact). The flush runs there and not in ``update`` because only
the attention function sees the mask, and left-padding keys must stay out of the per-channel min/max.

Storage order is packed tokens, then the residual (sinks, recent), while positions run sinks, packed, recent: the
attention only needs its mask in storage order (:meth:`KiviLayer.storage_order`), since softmax attention does not
depend on the order of the keys.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import (
    Cache,
    CacheLayerMixin,
    DummyLayer,
    DynamicSlidingWindowLayer,
    get_layer_types_and_kwargs,
)

from ..ops.kivi import DEFAULT_SINK_LENGTH, kivi_pack, validate_kivi_config
from .key_clipping import clip_key_groups

# (attribute name, packed along tokens every `n` tokens: "word" = 32 // nbits, "group" = G, "token" = 1)
_PACKED_FIELDS = (
    ("key_codes", "word"), ("key_scale", "group"), ("key_zero", "group"),
    ("value_codes", "token"), ("value_scale", "token"), ("value_zero", "token"),
)


@dataclass
class KiviHandle:
    """What ``KiviLayer.update`` returns as "keys" and "values": the layer and where this step's tokens start."""

    layer: "KiviLayer"
    past_length: int
    query_length: int


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def sink_prefix(sink_length: int, valid: torch.Tensor | None) -> int:
    """Length of the exact prefix: ``sink_length`` plus the longest left padding of ``valid (B, N)`` (False = pad)."""
    if sink_length == 0 or valid is None:
        return sink_length
    # Runs once per sequence, at the prompt's flush, so this host sync stays out of the decode steps.
    return sink_length + int((~valid).int().cummin(dim=1).values.sum(dim=1).max())


def flush_count(recent: int, group_size: int, residual_length: int) -> int:
    """Tokens a flush packs when ``recent`` non-sink tokens sit in the residual: the oldest whole groups, once there
    are ``R`` or more, leaving ``R - G`` to ``R - 1`` of them (``R = 0``: every whole group)."""
    if recent < residual_length:
        return 0
    return min(group_size * ((recent - residual_length) // group_size + 1), group_size * (recent // group_size))


def pack_tokens(keys: torch.Tensor, values: torch.Tensor, valid: torch.Tensor | None, layer) -> tuple:
    """The six packed fields (order of ``_PACKED_FIELDS``) of ``keys``/``values (B, H, n, D)``, ``n`` a multiple
    of G, with ``layer``'s settings (nbits, group_size, key_clipping, meta_dtype, backend); ``valid (B, n)`` or None
    leaves padding out of the key ranges."""
    g = layer.group_size
    if layer.key_clipping:
        keys = clip_key_groups(keys, valid, layer.nbits, g)
    packed = kivi_pack(keys, valid, layer.nbits, g, True, layer.meta_dtype, layer.backend)
    return packed + kivi_pack(values, None, layer.nbits, g, False, layer.meta_dtype, layer.backend)


class KiviLayer(CacheLayerMixin):
    """One full-attention layer's KIVI cache (see the module docstring).

    Parameters
    ----------
    nbits : 2 or 4.
    group_size : G, a multiple of 16 dividing head_dim.
    residual_length : R, a multiple of G: recent tokens are flushed once there are R of them.
    max_length : tokens to preallocate the packed store for (None: sized by the first flush, then doubled).
    backend : backend of the ``kivi_pack`` / ``kivi_attention`` ops (None: auto).
    sink_length : S, the first tokens of every sequence kept exact. With left padding the exact prefix is widened by
        the longest padding of the batch, so that every row keeps its own first S tokens (the pads are masked).
    key_clipping : shrink each key group's range to the one with the least squared error before packing
        (:mod:`.key_clipping`).
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, nbits: int = 4, group_size: int = 32, residual_length: int = 128,
                 max_length: int | None = None, backend: str | None = None, sink_length: int = DEFAULT_SINK_LENGTH,
                 key_clipping: bool = True):
        super().__init__()
        validate_kivi_config(nbits, group_size, residual_length, sink_length=sink_length, key_clipping=key_clipping)
        self.nbits, self.group_size, self.residual_length = nbits, group_size, residual_length
        self.max_length, self.backend = max_length, backend
        self.sink_length, self.key_clipping = sink_length, key_clipping
        self.n_quant = 0  # tokens in the packed store (a multiple of G)
        self.n_residual = 0  # tokens in the residual buffers, sinks included
        self.n_sink = 0  # exact prefix at the front of the residual (set when the first group is packed)
        self.capacity = 0  # tokens the packed store can hold
        self.sinks_chosen = False  # n_sink is set at the first flush

    # --- transformers' layer API ---------------------------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, d = key_states.shape
        validate_kivi_config(self.nbits, self.group_size, self.residual_length, head_dim=d,
                             sink_length=self.sink_length)
        self.dtype, self.device = key_states.dtype, key_states.device
        self.meta_dtype = torch.float32 if self.dtype == torch.float32 else torch.float16
        self.batch_size, self.num_heads, self.head_dim = b, h, d
        self.residual_keys = key_states.new_empty(b, h, self._residual_capacity(), d)
        self.residual_values = value_states.new_empty(b, h, self._residual_capacity(), d)
        for name, _ in _PACKED_FIELDS:
            setattr(self, name, None)
        self.n_quant = self.n_residual = self.n_sink = self.capacity = 0
        self.sinks_chosen = False
        self.is_initialized = True
        if self.max_length:
            self._reserve(self.max_length)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append ``(B, H, q, D)`` keys/values to the residual; return ``(handle, handle)`` for the attention."""
        empty_resized = self.is_initialized and self.get_seq_length() == 0 and (
            key_states.shape[0] != self.batch_size or key_states.device != self.device)
        if not self.is_initialized or empty_resized:  # an early-initialized cache may meet another batch size
            self.lazy_initialization(key_states, value_states)
        past, q = self.get_seq_length(), key_states.shape[-2]
        end = self.n_residual + q
        if end > self.residual_keys.shape[2]:
            self.residual_keys = self._grown(self.residual_keys, end, dim=2)
            self.residual_values = self._grown(self.residual_values, end, dim=2)
        self.residual_keys[:, :, self.n_residual:end] = key_states
        self.residual_values[:, :, self.n_residual:end] = value_states
        self.n_residual = end
        handle = KiviHandle(self, past, q)
        return handle, handle

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return self.n_quant + self.n_residual

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self.n_quant = self.n_residual = self.n_sink = 0
        self.sinks_chosen = False

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a KIVI cache cannot be cropped: quantized tokens cannot be restored exactly")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_batch(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_batch(lambda t: t.repeat_interleave(repeats, dim=0))
        self.batch_size *= repeats

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map_batch(lambda t: t[indices])
        self.batch_size = self.residual_keys.shape[0]

    # --- KIVI ----------------------------------------------------------------------------------------------------
    def residual(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual's used part: keys and values ``(B, H, n_residual, D)`` (views), the ``n_sink`` sinks first."""
        return self.residual_keys[:, :, :self.n_residual], self.residual_values[:, :, :self.n_residual]

    def packed(self) -> tuple[torch.Tensor, ...]:
        """The six packed stores (capacity-sized; the first ``n_quant`` tokens are valid), or empty tensors."""
        if self.key_codes is None:
            self._reserve(self.group_size)
        return tuple(getattr(self, name) for name, _ in _PACKED_FIELDS)

    def flush(self, valid: torch.Tensor | None = None) -> None:
        """Quantize the oldest whole groups of recent (non-sink) tokens once there are ``R`` of them or more.

        ``valid`` is ``(B, n_quant + n_residual)`` bool over every cached position (False = padding) or None.
        """
        if not self.sinks_chosen:
            # once, at the first flush (the prompt's): rows removed later must not move the group boundaries, so that
            # the static cache of a compiled step (which keeps every row) packs the same groups
            self.n_sink, self.sinks_chosen = sink_prefix(self.sink_length, valid), True
        s = self.n_sink
        n = flush_count(self.n_residual - s, self.group_size, self.residual_length)
        if n == 0:
            return
        start = self.n_quant
        self._reserve(start + n)
        token_valid = None if valid is None else valid[:, s + start:s + start + n]
        packed = pack_tokens(self.residual_keys[:, :, s:s + n], self.residual_values[:, :, s:s + n], token_valid,
                             self)
        f, g = 32 // self.nbits, self.group_size
        for (name, unit), src in zip(_PACKED_FIELDS, packed):
            step = {"word": f, "group": g, "token": 1}[unit]
            getattr(self, name)[:, :, start // step:(start + n) // step] = src
        # Close the gap behind the sinks, in buffers of the steady-state size (a long prefill had grown them).
        end, cap = self.n_residual, self._residual_capacity()
        for name in ("residual_keys", "residual_values"):
            buffer = getattr(self, name)
            target = buffer
            if buffer.shape[2] > cap:
                target = buffer.new_empty(*buffer.shape[:2], cap, buffer.shape[3])
                target[:, :, :s] = buffer[:, :, :s]
            target[:, :, s:end - n] = buffer[:, :, s + n:end].clone()  # clone: source and destination may overlap
            setattr(self, name, target)
        self.n_quant, self.n_residual = start + n, end - n

    def storage_order(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """Reorder a ``(B, Q, N)`` mask over positions (sinks, packed, recent) into storage order (packed, sinks,
        recent), the order of the keys ``kivi_attention`` reads."""
        s, q = self.n_sink, self.n_quant
        if mask is None or s == 0 or q == 0:
            return mask
        return torch.cat([mask[..., s:s + q], mask[..., :s], mask[..., s + q:]], dim=-1)

    def quantized_bytes_per_token(self) -> float:
        """Bytes one packed token costs in this layer, per sequence (codes + its share of scales and zeros)."""
        meta = torch.empty((), dtype=self.meta_dtype).element_size()
        d = self.head_dim
        return self.num_heads * (2 * d * self.nbits / 8 + 4 * meta * d / self.group_size)

    def nbytes(self) -> int:
        """Bytes of every tensor this layer holds (capacity included)."""
        if not self.is_initialized:
            return 0
        tensors = [self.residual_keys, self.residual_values] + [getattr(self, n) for n, _ in _PACKED_FIELDS]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)

    # --- storage -------------------------------------------------------------------------------------------------
    def _reserve(self, n_tokens: int) -> None:
        """Make the packed store hold at least ``n_tokens`` tokens (preallocated to ``max_length``, else doubled)."""
        if n_tokens <= self.capacity:
            return
        cap = max(n_tokens, 2 * self.capacity, self.max_length or 0)
        cap = _round_up(cap, self.group_size)
        b, h, d, g, f = self.batch_size, self.num_heads, self.head_dim, self.group_size, 32 // self.nbits
        shapes = {
            "key_codes": (cap // f, d), "key_scale": (cap // g, d), "key_zero": (cap // g, d),
            "value_codes": (cap, d // f), "value_scale": (cap, d // g), "value_zero": (cap, d // g),
        }
        for name, _ in _PACKED_FIELDS:
            dtype = torch.int32 if name.endswith("codes") else self.meta_dtype
            new = torch.zeros(b, h, *shapes[name], dtype=dtype, device=self.device)
            old = getattr(self, name)
            if old is not None:
                new[:, :, :old.shape[2]] = old
            setattr(self, name, new)
        self.capacity = cap

    def _residual_capacity(self) -> int:
        # after a flush the sinks and at most R - 1 recent tokens stay, plus the one a decode step appends (R = 0: up
        # to G - 1 stay); before the first flush, sink_length stands in for the sinks
        return max(self.residual_length, self.group_size) + max(self.n_sink, self.sink_length)

    @staticmethod
    def _grown(buffer: torch.Tensor, n: int, dim: int) -> torch.Tensor:
        new = buffer.new_empty(*buffer.shape[:dim], n, *buffer.shape[dim + 1:])
        new.narrow(dim, 0, buffer.shape[dim]).copy_(buffer)
        return new

    def _map_batch(self, fn) -> None:
        if not self.is_initialized:
            return
        self.residual_keys, self.residual_values = fn(self.residual_keys), fn(self.residual_values)
        for name, _ in _PACKED_FIELDS:
            if getattr(self, name) is not None:
                setattr(self, name, fn(getattr(self, name)))


class KiviCache(Cache):
    """A transformers ``Cache`` with a :class:`KiviLayer` per full-attention layer.

    Sliding-window layers keep transformers' ``DynamicSlidingWindowLayer`` (their window is short and exact), and
    layers without a KV cache get a ``DummyLayer``. Pass it as ``past_key_values`` while the model runs the
    ``"kivi"`` attention (see :func:`pydecode.cache.activate`).
    """

    def __init__(self, config, nbits: int = 4, group_size: int = 32, residual_length: int = 128,
                 max_length: int | None = None, backend: str | None = None, sink_length: int = DEFAULT_SINK_LENGTH,
                 key_clipping: bool = True):
        text_config = config.get_text_config(decoder=True)
        layer_types, layer_kwargs = get_layer_types_and_kwargs(text_config)
        layers = []
        for layer_type, kwargs in zip(layer_types, layer_kwargs):
            if layer_type == "full_attention":
                layers.append(KiviLayer(nbits, group_size, residual_length, max_length, backend, sink_length,
                                        key_clipping))
            elif layer_type in ("sliding_attention", "chunked_attention"):
                layers.append(DynamicSlidingWindowLayer(**kwargs))
            elif layer_type == "dummy":
                layers.append(DummyLayer())
            else:
                raise ValueError(f"KIVI cache does not support {layer_type!r} layers")
        super().__init__(layers=layers)

    def memory_footprint(self) -> dict[str, float]:
        """KV memory: ``total_bytes`` of every tensor held (all layers, capacity included), the bytes one packed
        token costs per layer and sequence (``bytes_per_token_per_layer``), and the token counts of the first
        KIVI layer (``quantized_tokens``, ``residual_tokens`` with the ``sink_tokens`` among them)."""
        kivi = [layer for layer in self.layers if isinstance(layer, KiviLayer) and layer.is_initialized]
        total = sum(layer.nbytes() for layer in kivi)
        for layer in self.layers:
            if not isinstance(layer, KiviLayer) and getattr(layer, "keys", None) is not None:
                total += sum(t.numel() * t.element_size() for t in (layer.keys, layer.values))
        first = kivi[0] if kivi else None
        return {
            "total_bytes": total,
            "bytes_per_token_per_layer": first.quantized_bytes_per_token() if first else 0.0,
            "quantized_tokens": first.n_quant if first else 0,
            "residual_tokens": first.n_residual if first else 0,
            "sink_tokens": first.n_sink if first else 0,
        }
