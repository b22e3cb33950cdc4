"""generate()'s transformers-compatible surface: configs, kwargs precedence, patch(), streamers."""
import warnings

import pytest
import torch
from transformers import DynamicCache
from transformers import GenerationConfig as HFGenerationConfig

import pydecode
from pydecode.generation.model.compat import OUTPUT_CACHE_FIELD

from tests.generation.models import padded_batch, tiny_model


def test_generation_config_saves_and_loads_with_pydecode_fields(tmp_path):
    config = pydecode.GenerationConfig(max_new_tokens=7, do_sample=True, top_k=4, frequency_penalty=0.5, seed=3)
    config.max_new_tokens = 9
    config.save_pretrained(tmp_path)
    loaded = pydecode.GenerationConfig.from_pretrained(tmp_path)
    assert (loaded.max_new_tokens, loaded.top_k, loaded.frequency_penalty, loaded.seed) == (9, 4, 0.5, 3)


def test_config_object_kwargs_and_model_default_resolve_like_transformers():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    config = HFGenerationConfig(max_new_tokens=5, do_sample=False, repetition_penalty=1.4)
    expected = model.generate(ids, attention_mask=mask, generation_config=config, max_new_tokens=8)
    got = pydecode.generate(model, ids, attention_mask=mask, generation_config=config, max_new_tokens=8)
    assert torch.equal(got, expected) and got.shape[1] == ids.shape[1] + 8


def test_pydecode_config_drives_generation_and_seed_reproduces():
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    config = pydecode.GenerationConfig(max_new_tokens=6, do_sample=True, top_k=0, seed=42, presence_penalty=0.3)
    a = pydecode.generate(model, ids, attention_mask=mask, generation_config=config)
    b = pydecode.generate(model, ids, attention_mask=mask, generation_config=config)
    assert torch.equal(a, b) and a.shape[1] == ids.shape[1] + 6


def test_patch_routes_model_generate_and_unpatch_restores_it():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    original = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    pydecode.patch(model)
    try:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                             return_dict_in_generate=True)
        assert isinstance(out, pydecode.GenerateOutput) and torch.equal(out.sequences, original)
    finally:
        pydecode.unpatch(model)
    assert not isinstance(model.generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=False,
                                         return_dict_in_generate=True), pydecode.GenerateOutput)


class _Recorder:
    def __init__(self):
        self.calls, self.ended = [], False

    def put(self, value):
        self.calls.append(value.clone())

    def end(self):
        self.ended = True


def test_streamer_receives_what_transformers_sends():
    model = tiny_model("llama")
    ids = torch.tensor([[1, 30, 31, 32]])
    theirs, ours = _Recorder(), _Recorder()
    model.generate(ids, max_new_tokens=6, do_sample=False, streamer=theirs)
    pydecode.generate(model, ids, max_new_tokens=6, do_sample=False, streamer=ours)
    assert ours.ended and len(ours.calls) == len(theirs.calls)
    for a, b in zip(ours.calls, theirs.calls, strict=True):
        assert torch.equal(a.view(-1), b.view(-1))


def test_backends_report_lists_the_reference():
    info = pydecode.backends()
    assert "torch" in info["active"]["cpu"]
    assert "torch" in info["ops"]["top_k_top_p_sample"]


def test_forcing_an_unusable_backend_raises(monkeypatch):
    import pytest

    model = tiny_model("llama")
    ids, mask = padded_batch()
    if torch.cuda.is_available():
        pytest.skip("the cuda backend is usable here (the tiny model runs on CPU tensors, though)")
    with pytest.raises(RuntimeError, match="cuda"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, do_sample=True, backend="cuda")
    monkeypatch.setenv("PYDECODE_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="backend"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, do_sample=True)


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_user_cache_under_either_name_and_no_deprecated_forward_keyword(name):
    """A caller's cache is taken as ``cache`` (transformers' current name) or ``past_key_values`` (the old one), comes
    back in the output, and the model's forward gets it under the name its signature declares (no deprecation)."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    expected = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=4)
    cache = DynamicCache(config=model.config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=4, return_dict_in_generate=True,
                                **{name: cache})
    assert torch.equal(out.sequences, expected)
    assert getattr(out, OUTPUT_CACHE_FIELD) is cache and cache.get_seq_length() == out.sequences.shape[1] - 1
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    with pytest.raises(ValueError, match="cache or past_key_values"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=4, cache=DynamicCache(config=model.config),
                          past_key_values=DynamicCache(config=model.config))
