"""A ``DynamicCache`` layer whose keys and values live in buffers preallocated for the whole generation.

transformers' ``DynamicLayer`` appends a step's keys/values with ``torch.cat``: a fresh copy of the layer's whole
history per step (and on CPU the page faults of a fresh allocation), then beam search's ``reorder_cache`` copies it
once more. Here ``keys``/``values`` are views at the front of ``(B, heads, capacity, head_dim)`` buffers: a step writes
its tokens in place, and a reorder gathers the rows into a second buffer of the same shape (one copy, no allocation
after the first). Anything that replaces ``keys``/``values`` with other tensors (transformers' own batch ops) still
works: the next update copies them back into buffers, as the ``torch.cat`` would have.

After a prompt's prefill is shared by its beams (:func:`mark_shared_prefix`), a reorder gathers only the positions
after the prompt: beams of one prompt hold the same prompt keys/values, and a reorder only mixes beams of one prompt,
so each row's prompt part is already right. With a long prompt that is most of the copy saved.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` with room for ``capacity`` tokens before it has to grow (see the module docstring)."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.buffers = None  # (keys, values), each (B, heads, capacity, head_dim)
        self.spare = None  # a second pair of that shape, the target of reorder_cache
        self.shared_prefix = 0  # leading positions that reorders leave in place (see mark_shared_prefix)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write ``(B, heads, q, head_dim)`` keys/values after the cached ones; return the keys/values so far."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if not self._in_buffers(key_states.shape[0], end):
            self._move_to_buffers(key_states, value_states, start, end)
        keys, values = self.buffers
        keys[:, :, start:end] = key_states
        values[:, :, start:end] = value_states
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep rows ``beam_idx`` (same batch size), gathered into the spare buffers, which become the live ones."""
        length = self.get_seq_length()
        if length == 0 or not self._in_buffers(beam_idx.shape[0], length):
            return super().reorder_cache(beam_idx)
        start = min(self.shared_prefix, length)
        if self.spare is None:
            self.spare = tuple(torch.empty_like(b) for b in self.buffers)
            for live, target in zip(self.buffers, self.spare):
                target[:, :, :start] = live[:, :, :start]  # in both buffers from now on: reorders leave it
        index = beam_idx.to(self.buffers[0].device)
        for live, target in zip((self.keys, self.values), self.spare):
            torch.index_select(live[:, :, start:], 0, index, out=target[:, :, start:length])
        self.buffers, self.spare = self.spare, self.buffers
        self.keys, self.values = (b[:, :, :length] for b in self.buffers)

    def _in_buffers(self, batch: int, end: int) -> bool:
        """``keys``/``values`` are the front of the buffers, which have ``batch`` rows and room up to ``end``."""
        if self.buffers is None or self.keys is None:
            return False
        keys = self.buffers[0]
        return (keys.shape[0] == batch and keys.shape[2] >= end and self.keys.data_ptr() == keys.data_ptr()
                and self.keys.shape[:2] == keys.shape[:2] and self.keys.stride() == keys.stride()
                and self.values.data_ptr() == self.buffers[1].data_ptr())

    def _move_to_buffers(self, key_states: torch.Tensor, value_states: torch.Tensor, start: int, end: int) -> None:
        """New buffers with room for ``end`` tokens or more, holding the ``start`` cached ones (the copy a
        ``torch.cat`` would have made)."""
        if end > self.capacity:
            self.capacity = end + end // 4
        buffers = []
        for cached, states in ((self.keys, key_states), (self.values, value_states)):
            buffer = states.new_empty(*states.shape[:2], self.capacity, states.shape[-1])
            if start:
                buffer[:, :, :start] = cached
            buffers.append(buffer)
        self.buffers, self.spare = tuple(buffers), None


def mark_shared_prefix(cache, length: int) -> None:
    """Declare that the first ``length`` positions of each layer are equal across the rows that a later
    ``reorder_cache`` mixes (a prompt prefilled once and repeated for its beams), so reorders skip them."""
    for layer in getattr(cache, "layers", ()):
        if isinstance(layer, PreallocatedLayer):
            layer.shared_prefix = length


def preallocate(cache: DynamicCache, capacity: int) -> DynamicCache:
    """Swap every plain ``DynamicLayer`` of an empty ``cache`` for a :class:`PreallocatedLayer` of ``capacity``
    tokens (sliding-window and other layers stay as they are); returns the cache."""
    cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer and not layer.is_initialized else layer
                    for layer in cache.layers]
    return cache
