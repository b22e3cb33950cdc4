"""pydecode.generate(..., cache_implementation="kivi"): the packed cache through the public API."""
import pytest
import torch

import pydecode
from pydecode.cache import KiviCache

from tests.generation.models import padded_batch, tiny_model


def test_generate_with_kivi_cache_matches_full_precision_first_tokens():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    exact = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=3, do_sample=False,
                            cache_implementation="kivi", return_dict_in_generate=True,
                            cache_config={"nbits": 4, "group_size": 16, "residual_length": 16})
    assert isinstance(out.past_key_values, KiviCache)
    assert torch.equal(out.sequences[:, :ids.shape[1] + 2], exact[:, :ids.shape[1] + 2])
    assert model.config._attn_implementation != "kivi"  # the attention switch is undone after the call


def test_kivi_config_errors_are_clear():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="nbits"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, cache_implementation="kivi",
                          cache_config={"nbits": 3})
    with pytest.raises(ValueError, match="KIVI|kivi"):
        pydecode.generate(tiny_model("gpt2"), ids, attention_mask=mask, max_new_tokens=2,
                          cache_implementation="kivi")


def test_pydecode_config_accepts_kivi():
    config = pydecode.GenerationConfig(cache_implementation="kivi", cache_config={"nbits": 2}, max_new_tokens=4)
    assert config.cache_implementation == "kivi"


def test_generate_passes_sink_and_clipping_options():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, do_sample=False,
                            cache_implementation="kivi", return_dict_in_generate=True,
                            cache_config={"group_size": 16, "residual_length": 16, "sink_length": 2,
                                          "key_clipping": False})
    layer = out.past_key_values.layers[0]
    assert (layer.sink_length, layer.key_clipping) == (2, False)
    with pytest.raises(ValueError, match="sink_length"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, cache_implementation="kivi",
                          cache_config={"group_size": 16, "sink_length": -3})
