"""The static KIVI cache of generate(compile=True): the same packed state as the eager KiviLayer, step by step, and
the same greedy tokens as eager KIVI decoding, in one graph without breaks or recompilation."""
import pytest
import torch
from torch._dynamo.utils import counters
from transformers import Gemma3TextConfig

import pydecode
from pydecode.cache import KiviLayer, StaticKiviCache, StaticKiviLayer
from pydecode.cache.kivi import _PACKED_FIELDS
from pydecode.generation.compile_options import COMPILED, clear_compiled
from pydecode.ops.kivi import kivi_attention

from tests.generation.models import EOS, padded_batch, tiny_model

EOS_LIST = [EOS, 9, 17, 33, 44, 55, 66, 77, 88, 99, 111]  # rows finish at different steps


def _layer_case(seed: int) -> dict:
    """Random settings, prompt length and left padding (seeded), over every packing regime."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda options: options[int(torch.randint(len(options), (1,), generator=g))]  # noqa: E731
    group = pick([16, 32])
    return dict(nbits=pick([2, 4]), group=group, residual=pick([0, group, 2 * group]), sinks=pick([0, 2, 4]),
                clipping=pick([True, False]), prompt=int(torch.randint(1, 3 * group + 6, (1,), generator=g)),
                pads=[int(p) for p in torch.randint(0, 9, (3,), generator=g)], backend=pick([None, "torch"]))


def _assert_same_state(eager: KiviLayer, static: StaticKiviLayer, valid: torch.Tensor) -> None:
    """Counts, packed tokens, residual and the storage-order mask of the two layers are identical."""
    n_quant, n_res = eager.n_quant, eager.n_residual
    assert (int(static.n_quant), int(static.n_residual), int(static.n_sink)) == (n_quant, n_res, eager.n_sink)
    f, g = 32 // eager.nbits, eager.group_size
    for (name, unit), eager_store, static_store in zip(_PACKED_FIELDS, eager.packed(), static.packed()):
        used = n_quant // {"word": f, "group": g, "token": 1}[unit]
        assert torch.equal(static_store[:, :, :used], eager_store[:, :, :used]), name
    for name in ("residual_keys", "residual_values"):
        assert torch.equal(getattr(static, name)[:, :, :n_res], getattr(eager, name)[:, :, :n_res]), name
    n = valid.shape[1]
    expected = eager.storage_order(valid[:, None, :])[:, 0]
    mask = static.storage_mask(torch.cat([valid, valid.new_zeros(valid.shape[0], 7)], dim=1))  # slots beyond: False
    packed_part, residual_part = mask[:, :static.capacity], mask[:, static.capacity:]
    assert torch.equal(packed_part[:, :n_quant], expected[:, :n_quant])
    assert torch.equal(residual_part[:, :n_res], expected[:, n_quant:n])
    assert not packed_part[:, n_quant:].any() and not residual_part[:, n_res:].any()


@pytest.mark.parametrize("seed", range(12))
def test_static_layer_packs_like_the_eager_layer_at_every_step(seed):
    """Prompt, then decoding steps across several flushes: the static layer's state (counts, packed codes/scales,
    residual, mask) equals KiviLayer's bit for bit after every step, and attention over its whole fixed-size store
    with the mask equals attention over the eager layer's used part."""
    case = _layer_case(seed)
    torch.manual_seed(seed)
    rows, heads, dim = len(case["pads"]), 2, 32
    # two flushes at least, after a prompt shorter than its sinks (padding below 9) too
    steps = max(case["residual"], case["group"]) + case["group"] + case["sinks"] + 9
    total = case["prompt"] + steps
    keys, values = torch.randn(2, rows, heads, total, dim).unbind(0)
    keys[:, :, ::7, 3] *= 20  # outlier channel: clipping has something to clip
    valid = torch.ones(rows, total, dtype=torch.bool)
    for row, pad in enumerate(case["pads"]):
        valid[row, :min(pad, case["prompt"] - 1)] = False
    settings = (case["nbits"], case["group"], case["residual"])
    eager = KiviLayer(*settings, None, case["backend"], case["sinks"], case["clipping"])
    static = StaticKiviLayer(*settings, total, case["backend"], case["sinks"], case["clipping"])
    length = case["prompt"]
    eager.update(keys[:, :, :length], values[:, :, :length])
    eager.flush(valid[:, :length])
    handle, _ = static.update(keys[:, :, :length], values[:, :, :length])
    static.prefill(handle.prompt_keys, handle.prompt_values, valid[:, :length])
    _assert_same_state(eager, static, valid[:, :length])
    flushes = 0
    query = torch.randn(rows, 2 * heads, 1, dim)
    for t in range(length, total):
        eager.update(keys[:, :, t:t + 1], values[:, :, t:t + 1])
        handle, _ = static.update(keys[:, :, t:t + 1], values[:, :, t:t + 1])
        assert handle.prompt_keys is None
        mask = valid[:, :t + 1]
        expected = kivi_attention(query, *eager.packed(), eager.residual_keys, eager.residual_values,
                                  eager.storage_order(mask[:, None]), eager.n_quant, eager.n_residual, 0.2,
                                  eager.nbits, eager.group_size, case["backend"])
        got = kivi_attention(query, *static.packed(), static.residual_keys, static.residual_values,
                             static.storage_mask(mask)[:, None], static.capacity, static.residual_keys.shape[2], 0.2,
                             static.nbits, static.group_size, case["backend"])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        before = eager.n_quant
        eager.flush(mask)
        static.flush(mask)
        flushes += eager.n_quant > before
        _assert_same_state(eager, static, mask)
    assert flushes >= 2, "the steps must cross group boundaries for this test to mean something"


def test_eager_sinks_stay_when_rows_are_removed():
    """KiviLayer chooses its sinks at the first flush (the prompt's): removing the most padded row before the first
    pack must not move the group boundaries, which the static cache (keeping every row) could not follow."""
    layer = KiviLayer(4, 16, 16, None, "torch", 4, False)
    keys = torch.randn(3, 2, 6, 32)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[1, :5] = False
    layer.update(keys, keys)
    layer.flush(valid)
    assert layer.n_sink == 9
    layer.batch_select_indices(torch.tensor([0, 2]))
    layer.update(keys[[0, 2], :, :1], keys[[0, 2], :, :1])
    layer.flush(valid[[0, 2]].new_ones(2, 7))
    assert layer.n_sink == 9


KIVI = {"nbits": 2, "group_size": 16, "residual_length": 16, "sink_length": 2}


def _static_layers(model) -> list[StaticKiviLayer]:
    caches = [graph.cache for graph in COMPILED[model].values() if isinstance(graph.cache, StaticKiviCache)]
    assert len(caches) == 1
    return caches[0].layers


def test_compiled_kivi_matches_eager_in_one_graph():
    """Dynamo alone: greedy tokens equal eager KIVI decoding's with padding and eos over lengths crossing several
    group boundaries, in one graph (reused by a second call of the bucket), without graph breaks; without eos (no
    row removed by eager decoding) the first layer's packed state equals the eager cache's bit for bit (its keys
    depend on the tokens alone)."""
    model = tiny_model("llama")
    clear_compiled(model)
    ids, mask = padded_batch()
    settings = {"backend": "eager"}
    before, breaks = counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())
    kwargs = dict(do_sample=False, cache_implementation="kivi", cache_config=KIVI)
    for length, new in ((9, 23), (12, 40)):
        longer, longer_mask = padded_batch(length=length, seed=length)
        eager = pydecode.generate(model, longer, attention_mask=longer_mask, max_new_tokens=new,
                                  eos_token_id=EOS_LIST, **kwargs)
        compiled = pydecode.generate(model, longer, attention_mask=longer_mask, max_new_tokens=new,
                                     eos_token_id=EOS_LIST, compile=settings, **kwargs)
        assert torch.equal(compiled, eager)
    assert counters["stats"]["unique_graphs"] - before == 1, "one graph for every call of the bucket"
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=50, return_dict_in_generate=True,
                            **kwargs)
    compiled = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=50, compile=settings, **kwargs)
    assert torch.equal(compiled, out.sequences)
    eager_layer, static_layer = out.past_key_values.layers[0], _static_layers(model)[0]
    assert eager_layer.n_quant >= 3 * KIVI["group_size"]
    valid = torch.cat([mask, mask.new_ones(mask.shape[0], 49)], dim=1).bool()
    _assert_same_state(eager_layer, static_layer, valid)
    assert sum(counters["graph_break"].values()) == breaks
    assert model.config._attn_implementation != "kivi"  # the attention switch is undone after the call


def test_compiled_kivi_with_inductor_matches_eager():
    """Inductor: greedy and seeded sampled tokens equal eager KIVI decoding's (4 bits, R = 0: a pack every G)."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    config = {"nbits": 4, "group_size": 16, "residual_length": 0}
    for extra in (dict(do_sample=False), dict(do_sample=True, seed=3, top_k=20, temperature=0.9)):
        kwargs = dict(max_new_tokens=40, eos_token_id=EOS_LIST, cache_implementation="kivi", cache_config=config,
                      **extra)
        eager = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
        assert torch.equal(pydecode.generate(model, ids, attention_mask=mask, compile=True, **kwargs), eager)


def test_static_kivi_rejects_sliding_layers():
    config = Gemma3TextConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"])
    with pytest.raises(NotImplementedError, match="full attention"):
        StaticKiviCache(config, 256)
