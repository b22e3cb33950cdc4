"""pydecode.SamplingParams: every field validated, the hosted-API aliases, and the conversions to generate()."""
import dataclasses

import pytest
import torch

import pydecode
from pydecode import SamplingParams

from tests.generation.models import padded_batch, tiny_model

GOOD = {
    "max_new_tokens": 5, "min_new_tokens": 2, "do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.9,
    "min_p": 0.05, "typical_p": 0.8, "top_h": 0.5, "epsilon_cutoff": 0.01, "eta_cutoff": 0.02,
    "repetition_penalty": 1.2, "frequency_penalty": 0.5, "presence_penalty": -0.5, "no_repeat_ngram_size": 3,
    "bad_words_ids": [[7, 8], [9]], "suppress_tokens": [10, 11], "sequence_bias": [[[12], 1.5]],
    "eos_token_id": [5, 6], "stop_strings": ["\n"], "num_return_sequences": 2, "seed": 42, "output_logprobs": True,
    "top_logprobs": 3, "dynatemp_range": 0.3, "dynatemp_exponent": 2.0,
}

BAD = {  # field -> (bad value, error)
    "max_new_tokens": [(0, ValueError), (1.5, TypeError)],
    "min_new_tokens": [(-1, ValueError)],
    "do_sample": [(1, TypeError)],
    "temperature": [(-0.1, ValueError), (float("inf"), ValueError), (float("nan"), ValueError), ("1", TypeError)],
    "top_k": [(-1, ValueError), (2.0, TypeError)],
    "top_p": [(0.0, ValueError), (1.1, ValueError)],
    "min_p": [(-0.1, ValueError), (1.5, ValueError)],
    "typical_p": [(0.0, ValueError), (2.0, ValueError)],
    "top_h": [(1.5, ValueError)],
    "epsilon_cutoff": [(1.0, ValueError)],
    "eta_cutoff": [(-0.1, ValueError)],
    "repetition_penalty": [(0.0, ValueError)],
    "frequency_penalty": [(2.5, ValueError)],
    "presence_penalty": [(-2.5, ValueError)],
    "no_repeat_ngram_size": [(-1, ValueError)],
    "bad_words_ids": [([[-1]], ValueError), ([[]], ValueError), ([], ValueError)],
    "suppress_tokens": [([-3], ValueError)],
    "sequence_bias": [([[[1], float("nan")]], ValueError), ([[1, 2, 3]], ValueError), ({}, ValueError)],
    "eos_token_id": [(-1, ValueError), ([1.5], ValueError)],
    "stop_strings": [([""], ValueError), ([3], ValueError)],
    "num_return_sequences": [(0, ValueError)],
    "seed": [(1 << 64, ValueError), (1.0, TypeError)],
    "output_logprobs": [("yes", TypeError)],
    "top_logprobs": [(-1, ValueError)],
    "dynatemp_range": [(-0.5, ValueError)],
    "dynatemp_exponent": [(-1.0, ValueError)],
}


def test_every_field_has_a_good_and_a_bad_value():
    names = {f.name for f in dataclasses.fields(SamplingParams)}
    assert names == set(GOOD) == set(BAD)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_each_field_is_stored(name):
    value = getattr(SamplingParams(**{name: GOOD[name]}), name)
    want = GOOD[name]
    if name in ("bad_words_ids",):
        want = tuple(tuple(w) for w in want)
    elif name == "sequence_bias":
        want = (((12,), 1.5),)
    elif name in ("suppress_tokens", "eos_token_id", "stop_strings"):
        want = tuple(want)
    assert value == want


@pytest.mark.parametrize("name,value,error", [(n, v, e) for n, cases in BAD.items() for v, e in cases])
def test_bad_values_raise_naming_the_field(name, value, error):
    with pytest.raises(error, match=name):
        SamplingParams(**{name: value})


def test_frozen_and_hashable():
    params = SamplingParams(**GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.temperature = 2.0
    assert hash(params) == hash(SamplingParams(**GOOD)) and params == SamplingParams(**GOOD)


def test_hosted_api_aliases():
    params = SamplingParams(max_tokens=7, stop="END", logprobs=2, n=3, logit_bias={4: -100.0, 9: 2.0}, seed=1,
                            frequency_penalty=0.1, presence_penalty=0.2)
    assert params.max_new_tokens == 7 and params.stop_strings == ("END",) and params.num_return_sequences == 3
    assert params.top_logprobs == 2 and params.output_logprobs
    assert params.sequence_bias == (((4,), -100.0), ((9,), 2.0))
    assert SamplingParams(stop=["a", "b"]).stop_strings == ("a", "b")
    assert SamplingParams(logprobs=0).output_logprobs


def test_alias_and_canonical_together_or_unknown_names_raise():
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=3, max_new_tokens=4)
    with pytest.raises(TypeError, match="temprature"):
        SamplingParams(temprature=0.5)
    with pytest.raises(TypeError, match="logit_bias"):
        SamplingParams(logit_bias=[(1, 2.0)])


def test_temperature_zero_means_greedy_unless_do_sample_says_otherwise():
    assert SamplingParams().sampling and not SamplingParams(temperature=0.0).sampling
    assert not SamplingParams(do_sample=False, temperature=0.7).sampling


def test_generation_config_round_trip():
    params = SamplingParams(**GOOD)
    config = params.to_generation_config()
    assert isinstance(config, pydecode.GenerationConfig)
    assert config.dynatemp_range == 0.3 and config.sequence_bias == [[[12], 1.5]] and config.eos_token_id == [5, 6]
    assert SamplingParams.from_generation_config(config) == params


def test_from_a_transformers_config_with_unset_filters():
    import transformers

    params = SamplingParams.from_generation_config(transformers.GenerationConfig(do_sample=True, top_k=None,
                                                                                 temperature=0.5, max_new_tokens=9))
    assert params.top_k == 0 and params.temperature == 0.5 and params.max_new_tokens == 9 and params.sampling
    greedy = SamplingParams.from_generation_config(transformers.GenerationConfig(top_k=50))
    assert not greedy.sampling and greedy.top_k == 0


def test_generate_kwargs_run_the_same_decode_as_the_keywords():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    params = SamplingParams(max_tokens=6, temperature=0.8, top_k=30, seed=4, frequency_penalty=0.5,
                            logit_bias={7: 3.0}, no_repeat_ngram_size=2)
    out = pydecode.generate(model, ids, attention_mask=mask, **params.to_generate_kwargs())
    want = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=6, do_sample=True, temperature=0.8,
                             top_k=30, seed=4, frequency_penalty=0.5, sequence_bias=[[[7], 3.0]],
                             no_repeat_ngram_size=2)
    assert torch.equal(out, want)
    greedy = SamplingParams(temperature=0.0, max_tokens=4).to_generate_kwargs()
    assert greedy["do_sample"] is False and "temperature" not in greedy and "top_k" not in greedy
    logprobs = pydecode.generate(model, ids, attention_mask=mask, **SamplingParams(max_tokens=3, logprobs=2,
                                                                                   seed=1).to_generate_kwargs())
    assert logprobs.top_logprobs.shape == (3, 3, 2)
