"""PreallocatedLayer holds what transformers' DynamicLayer holds after any sequence of cache operations, without a
new allocation per step; the runner's default cache uses it."""
import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

import pydecode
from pydecode.generation.model.preallocated_cache import PreallocatedLayer, mark_shared_prefix

from tests.generation.models import padded_batch, tiny_model


def _states(batch, tokens, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, tokens, 8, generator=g), torch.randn(batch, 2, tokens, 8, generator=g)


# each operation is applied to both layers; (name, argument)
SCRIPT = [
    ("update", (3, 5)), ("update", (3, 1)), ("reorder", [2, 0, 0]), ("update", (3, 1)), ("reorder", [1, 1, 2]),
    ("crop", -2), ("update", (3, 4)), ("repeat", 2), ("update", (6, 1)), ("select", [0, 3, 5]), ("update", (3, 2)),
    ("reorder", [0, 2, 1]), ("update", (3, 9)),  # grows past the capacity of 16
]


def _apply(layer, op, arg, step):
    if op == "update":
        return layer.update(*_states(*arg, seed=step))
    if op == "reorder":
        layer.reorder_cache(torch.tensor(arg))
    elif op == "crop":
        layer.crop(arg)
    elif op == "repeat":
        layer.batch_repeat_interleave(arg)
    else:
        layer.batch_select_indices(torch.tensor(arg))
    return layer.keys, layer.values


def test_same_keys_and_values_as_dynamic_layer():
    ours, theirs = PreallocatedLayer(capacity=16), DynamicLayer()
    for step, (op, arg) in enumerate(SCRIPT):
        got, want = _apply(ours, op, arg, step), _apply(theirs, op, arg, step)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (step, op)
        assert ours.get_seq_length() == theirs.get_seq_length()
    assert ours.capacity >= ours.get_seq_length() > 16


def test_steps_write_in_place_and_reorders_alternate_two_buffers():
    layer = PreallocatedLayer(capacity=12)
    layer.update(*_states(2, 4, 0))
    first = layer.keys.data_ptr()
    layer.update(*_states(2, 1, 1))
    assert layer.keys.data_ptr() == first  # appended in place: no copy of the history
    layer.reorder_cache(torch.tensor([1, 1]))
    second = layer.keys.data_ptr()
    layer.update(*_states(2, 1, 2))
    layer.reorder_cache(torch.tensor([0, 1]))
    assert second != first and layer.keys.data_ptr() == first  # gathered back into the first buffer


@pytest.mark.parametrize("kind,layers", [("llama", {PreallocatedLayer}),
                                         ("gemma3", {DynamicSlidingWindowLayer})])  # the tiny Gemma-3: all sliding
def test_default_cache_preallocates_full_attention_layers(kind, layers):
    ids, mask = padded_batch()
    out = pydecode.generate(tiny_model(kind), ids, attention_mask=mask, max_new_tokens=4, do_sample=False,
                            return_dict_in_generate=True)
    assert isinstance(out.past_key_values, DynamicCache)
    assert {type(layer) for layer in out.past_key_values.layers} == layers
    kept = out.sequences.shape[1] - 1 if kind == "llama" else 3  # a sliding window of 4 keeps 3 past tokens
    assert out.past_key_values.layers[0].keys.shape[2] == kept


def test_reorders_after_a_shared_prefix_leave_it_in_place():
    """2 prompts x 3 beams: with the prompt declared shared, reorders give DynamicLayer's result and gather only the
    positions after the prompt (a prefix made to differ between beams stays with its row)."""
    ours, theirs = PreallocatedLayer(capacity=16), DynamicLayer()
    for layer in (ours, theirs):
        layer.update(*_states(2, 5, 0))
        layer.batch_repeat_interleave(3)
    cache = DynamicCache()
    cache.layers = [ours]
    mark_shared_prefix(cache, 5)
    for step, order in enumerate(([2, 2, 0, 4, 3, 3], [1, 0, 0, 5, 5, 4], [0, 0, 0, 3, 3, 3])):
        for layer in (ours, theirs):
            layer.update(*_states(6, 1, step + 1))
            layer.reorder_cache(torch.tensor(order))
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values), step
    marker = torch.arange(6.0).view(6, 1, 1, 1)
    ours.keys[:, :, :5] = marker  # break the invariant on purpose: each row's prefix names the row
    ours.update(*_states(6, 1, 9))
    ours.reorder_cache(torch.tensor([2, 2, 0, 4, 3, 3]))
    ours.update(*_states(6, 1, 10))
    ours.reorder_cache(torch.tensor([1, 0, 0, 5, 5, 4]))
    assert torch.equal(ours.keys[:, :, :5], marker.expand(6, 2, 5, 8))
