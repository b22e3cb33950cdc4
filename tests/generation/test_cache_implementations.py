"""``cache_implementation``: transformers' static and quantized caches built as its generate builds them, with its
tokens and scores; bad names and conflicting arguments raise."""
import pytest
import torch
from transformers import DynamicCache

import pydecode

from tests.generation.models import padded_batch, tiny_model

STRATEGIES = {"greedy": dict(do_sample=False), "beam": dict(num_beams=3, num_return_sequences=2, do_sample=False),
              "sample": dict(do_sample=True, top_k=5, max_new_tokens=1)}


def assert_like_transformers(model, kwargs):
    ids, mask = padded_batch()
    kwargs = dict(dict(max_new_tokens=6, return_dict_in_generate=True, output_scores=True), **kwargs)
    want = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    if not kwargs.get("do_sample"):
        assert got.sequences.tolist() == want.sequences.tolist()
    for ours, theirs in zip(got.scores, want.scores, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    return got


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_static_cache_matches_transformers(kind, strategy):
    """Gemma-3: sliding-window layers of 4 tokens inside the static cache."""
    got = assert_like_transformers(tiny_model(kind), dict(cache_implementation="static", **STRATEGIES[strategy]))
    assert type(got.cache).__name__ == "StaticCache"


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_quantized_cache_matches_transformers(strategy):
    pytest.importorskip("optimum.quanto")
    config = {"backend": "quanto", "nbits": 4, "residual_length": 2}
    got = assert_like_transformers(tiny_model("gpt2"), dict(cache_implementation="quantized", cache_config=config,
                                                            **STRATEGIES[strategy]))
    assert type(got.cache).__name__ == "QuantizedCache"


def test_bad_cache_arguments_raise():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="cache_implementation"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, cache_implementation="statik")
    with pytest.raises(NotImplementedError, match="paged"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, cache_implementation="paged")
    with pytest.raises(ValueError, match="not both"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, cache_implementation="static",
                          past_key_values=DynamicCache(config=model.config))
