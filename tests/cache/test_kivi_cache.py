"""KIVI cache end to end on tiny seeded random-weight models built from configs (no downloads)."""
import pytest
import torch
from transformers import (
    DynamicCache,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from pydecode.cache import KiviCache, KiviLayer, activate, make_cache
from pydecode.ops.kivi.reference import dequantize_keys, dequantize_values

from tests.support.devices import model_on_device, to_device

SMALL = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8,
             num_key_value_heads=2, head_dim=32, max_position_embeddings=256)
KIVI4 = {"nbits": 4, "group_size": 32, "residual_length": 32}


def _model(kind, **overrides):
    torch.manual_seed(0)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**{**SMALL, **overrides}))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**{**SMALL, **overrides}))
    else:
        cfg = Gemma3TextConfig(**{**SMALL, "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"],
                                  **overrides})
        model = Gemma3ForCausalLM(cfg)
    return model.eval()


def _prompt(batch=2, length=45, pad=(0, 6)):
    ids = torch.randint(3, 256, (batch, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    for row, p in enumerate(pad[:batch]):
        mask[row, :p] = 0
        ids[row, :p] = 0
    return ids, mask


def _generate(model, ids, mask, cache=None, new_tokens=12, **kw):
    kw = dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=0, **kw)
    if cache is None:
        return model.generate(ids, attention_mask=mask, **kw)[:, ids.shape[1]:]
    with activate(model):
        return model.generate(ids, attention_mask=mask, past_key_values=cache, **kw)[:, ids.shape[1]:]


@pytest.mark.parametrize("kind", ["llama", "qwen2", "gemma3"])
def test_lossless_window_is_exact(kind):
    """With a residual longer than the sequence nothing is quantized: tokens equal the full-precision cache's."""
    model = _model(kind)
    ids, mask = _prompt()
    cache = make_cache("kivi", {"nbits": 2, "group_size": 32, "residual_length": 128}, model, 2, 64)
    assert torch.equal(_generate(model, ids, mask, cache), _generate(model, ids, mask))
    assert model.config._attn_implementation == "sdpa"  # activate() put it back


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_kivi4_greedy_matches_full_precision(kind, backend):
    model = model_on_device(_model(kind))
    ids, mask = map(to_device, _prompt())
    cache = make_cache("kivi", {**KIVI4, "backend": backend}, model, 2, 64)
    got, expected = _generate(model, ids, mask, cache, new_tokens=4), _generate(model, ids, mask, new_tokens=4)
    assert cache.layers[0].n_quant > 0  # the prompt was quantized and decode read it
    assert torch.equal(got, expected)


def test_decode_logit_error_shrinks_with_bits():
    """Teacher-forced decode step: relative logit error of KIVI-4 is small, and KIVI-2's larger."""
    model = _model("llama")
    ids, mask = _prompt(length=70)
    step = torch.tensor([[5], [7]])
    step_mask = torch.cat([mask, torch.ones_like(step)], 1)
    position_ids = (step_mask.cumsum(1) - 1)[:, -1:]
    logits = {}
    for nbits in (None, 4, 2):
        cache = DynamicCache(config=model.config) if nbits is None else KiviCache(model.config, nbits, 32, 32)
        with activate(model):
            model(ids, attention_mask=mask, past_key_values=cache)
            logits[nbits] = model(step, attention_mask=step_mask, position_ids=position_ids,
                                  past_key_values=cache).logits
    error = {n: ((logits[n] - logits[None]).norm() / logits[None].norm()).item() for n in (4, 2)}
    assert error[4] < 0.05 and error[4] < error[2] < 0.25


def test_decode_equals_attention_over_dequantized_cache():
    """One decode step through the packed cache gives the logits of a DynamicCache holding the dequantized K/V."""
    model = _model("llama")
    ids, mask = _prompt(length=70)
    cache = KiviCache(model.config, **{**KIVI4, "nbits": 2})
    with activate(model):
        model(ids, attention_mask=mask, past_key_values=cache)
    exact = DynamicCache(config=model.config)
    for layer_idx, layer in enumerate(cache.layers):
        k = dequantize_keys(*layer.packed()[:3], 2, 32, layer.n_quant)
        v = dequantize_values(*layer.packed()[3:], 2, 32, layer.n_quant)
        rk, rv = layer.residual()
        s = layer.n_sink  # positions run sinks, packed, recent
        exact.update(torch.cat([rk[:, :, :s], k, rk[:, :, s:]], 2), torch.cat([rv[:, :, :s], v, rv[:, :, s:]], 2),
                     layer_idx)
    step = torch.tensor([[5], [7]])
    mask = torch.cat([mask, torch.ones_like(step)], 1)
    position_ids = (mask.cumsum(1) - 1)[:, -1:]
    with activate(model):
        got = model(step, attention_mask=mask, position_ids=position_ids, past_key_values=cache).logits
    expected = model(step, attention_mask=mask, position_ids=position_ids, past_key_values=exact).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_beam_search_reorders_the_packed_cache():
    model = _model("llama")
    ids, mask = _prompt()
    cache = make_cache("kivi", {"nbits": 4, "group_size": 32, "residual_length": 256}, model, 4, 64)
    got = _generate(model, ids, mask, cache, new_tokens=4, num_beams=2)
    assert torch.equal(got, _generate(model, ids, mask, new_tokens=4, num_beams=2))


def test_residual_window_and_memory_accounting():
    model = _model("llama").to(torch.float16)
    ids, mask = _prompt(length=60)
    max_length = 60 + 10
    cache = make_cache("kivi", {"nbits": 2, "group_size": 32, "residual_length": 64, "sink_length": 0}, model, 2,
                       max_length)
    for layer in cache.layers:
        assert layer.capacity == 96  # preallocated for max_length, in whole groups
    _generate(model, ids, mask, cache, new_tokens=10)
    layer = cache.layers[0]
    assert layer.n_quant % 32 == 0 and 32 <= layer.n_residual < 64  # R - G <= residual < R once past R tokens
    assert layer.get_seq_length() == 60 + 9
    held = 0
    for layer in cache.layers:
        tensors = [layer.residual_keys, layer.residual_values, *layer.packed()]
        held += sum(t.numel() * t.element_size() for t in tensors)
    footprint = cache.memory_footprint()
    assert footprint["total_bytes"] == held
    # per token and kv head: 2-bit codes for k and v (2 * 32 * 2 / 8 = 16 B) + fp16 scale/zero (4 * 2 * 32 / 32 = 8 B)
    assert footprint["bytes_per_token_per_layer"] == 2 * (16 + 8)
    fp16_bytes = 2 * 2 * 32 * 2
    assert fp16_bytes / footprint["bytes_per_token_per_layer"] >= 5
    residual_bytes = 2 * (2 * 2 * 64 * 32 * 2)  # k and v buffers (B, H, R, D) fp16, per layer
    assert held == 2 * (2 * 96 * footprint["bytes_per_token_per_layer"] + residual_bytes)


@pytest.mark.parametrize("config, message", [
    ({"nbits": 3}, "nbits"),
    ({"group_size": 24}, "group_size"),
    ({"group_size": 32, "residual_length": 48}, "residual_length"),
    ({"group_size": 64}, "head_dim"),
    ({"bits": 4}, "unknown"),
])
def test_invalid_configs_raise(config, message):
    with pytest.raises(ValueError, match=message):
        make_cache("kivi", config, _model("llama"), 1, 32)


def test_unknown_cache_and_unsupported_model_raise():
    with pytest.raises(ValueError, match="unknown cache"):
        make_cache("int8", None, _model("llama"), 1, 32)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="model types"):
        make_cache("kivi", None, gpt2, 1, 32)
    with pytest.raises(ValueError, match="model types"):
        with activate(gpt2):
            pass


def test_hybrid_model_keeps_exact_sliding_layers():
    cache = KiviCache(_model("gemma3").config)
    assert not isinstance(cache.layers[0], KiviLayer) and isinstance(cache.layers[1], KiviLayer)


def test_layer_streams_groups_and_shrinks_after_long_prefill():
    layer = KiviLayer(nbits=4, group_size=32, residual_length=64, backend="torch", sink_length=0)
    g = torch.Generator().manual_seed(3)
    k = torch.randn(1, 2, 300, 32, generator=g)
    layer.update(k, -k)
    layer.flush()
    assert (layer.n_quant, layer.n_residual) == (256, 44) and layer.residual_keys.shape[2] == 64
    for step in range(40):
        new = torch.randn(1, 2, 1, 32, generator=g)
        layer.update(new, -new)
        layer.flush()
        assert layer.n_quant % 32 == 0 and 32 <= layer.n_residual < 64
        assert layer.get_seq_length() == 301 + step
    torch.testing.assert_close(dequantize_keys(*layer.packed()[:3], 4, 32, 256), k[:, :, :256], atol=0.5, rtol=0)


def test_sink_tokens_stay_exact_while_the_rest_streams():
    layer = KiviLayer(nbits=2, group_size=32, residual_length=64, backend="torch", sink_length=4, key_clipping=False)
    g = torch.Generator().manual_seed(4)
    k, v = torch.randn(1, 2, 200, 32, generator=g), torch.randn(1, 2, 200, 32, generator=g)
    layer.update(k, v)
    layer.flush()
    for _ in range(40):
        new = torch.randn(1, 2, 1, 32, generator=g)
        layer.update(new, -new)
        layer.flush()
    rk, rv = layer.residual()
    assert layer.n_sink == 4 and torch.equal(rk[:, :, :4], k[:, :, :4]) and torch.equal(rv[:, :, :4], v[:, :, :4])
    assert 32 <= layer.n_residual - 4 < 64 and layer.get_seq_length() == 240
    # the packed store starts right after the sinks: its first group is tokens 4..35
    key_scale = layer.packed()[1][:, :, :1]
    torch.testing.assert_close(key_scale, (k[:, :, 4:36].amax(2, True) - k[:, :, 4:36].amin(2, True)) / 3)
    packed_keys = dequantize_keys(*layer.packed()[:3], 2, 32, 32)
    assert ((packed_keys - k[:, :, 4:36]).abs() <= key_scale / 2 + 1e-5).all()
    assert layer.residual_keys.shape[2] == 64 + 4


def test_sink_prefix_widens_by_the_longest_left_padding():
    model = _model("llama")
    ids, mask = _prompt(length=100, pad=(0, 6))
    cache = make_cache("kivi", {"nbits": 4, "group_size": 32, "residual_length": 32, "sink_length": 3}, model, 2, 120)
    _generate(model, ids, mask, cache, new_tokens=2)
    layer = cache.layers[0]
    assert layer.n_sink == 3 + 6 and layer.n_quant > 0
    assert cache.memory_footprint()["sink_tokens"] == 9


def test_sinks_and_clipping_keep_greedy_tokens_with_padding(backend):
    model = model_on_device(_model("llama"))
    ids, mask = map(to_device, _prompt())
    cache = make_cache("kivi", {**KIVI4, "sink_length": 2, "key_clipping": True, "backend": backend}, model, 2, 64)
    got, expected = _generate(model, ids, mask, cache, new_tokens=4), _generate(model, ids, mask, new_tokens=4)
    assert cache.layers[0].n_quant > 0 and torch.equal(got, expected)


def test_memory_accounting_counts_the_sinks():
    model = _model("llama")
    cache = make_cache("kivi", {"nbits": 4, "group_size": 32, "residual_length": 64, "sink_length": 8}, model, 1, 96)
    layer = cache.layers[0]
    assert layer.residual_keys.shape[2] == 64 + 8
    residual_bytes = 2 * (2 * (64 + 8) * 32 * 4)  # k and v buffers (B=1, H=2, R + S, D) in float32
    per_layer = 96 * layer.quantized_bytes_per_token() + residual_bytes
    assert cache.memory_footprint()["total_bytes"] == 2 * per_layer


@pytest.mark.parametrize("config, message", [
    ({"sink_length": -1}, "sink_length"),
    ({"sink_length": 2.0}, "sink_length"),
    ({"key_clipping": "yes"}, "key_clipping"),
])
def test_invalid_sink_and_clipping_options_raise(config, message):
    with pytest.raises(ValueError, match=message):
        make_cache("kivi", config, _model("llama"), 1, 32)
