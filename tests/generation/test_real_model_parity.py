"""Greedy parity with transformers' generate on the real SmolLM2-135M-Instruct, token for token."""
import pytest
import torch

import pydecode
from pydecode.models import load_model

pytestmark = pytest.mark.real_model

PROMPTS = ["Once upon a time", "The capital of France is a city that", "def fibonacci(n):"]


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


@pytest.fixture(scope="module")
def batch(smollm2):
    """The three prompts, left-padded to one length."""
    return smollm2[1](PROMPTS, return_tensors="pt", padding=True)


def token_ids(tokenizer, *texts):
    return [tokenizer.convert_tokens_to_ids(t) for t in texts]


def case_kwargs(case, tokenizer, prompt_length):
    punctuation = token_ids(tokenizer, ",", ".", "Ċ")  # Ċ: the byte-level newline
    return {
        "batch": dict(),
        "num_return_sequences": dict(do_sample=True, top_k=1, num_return_sequences=2),
        "eos_list": dict(eos_token_id=[tokenizer.eos_token_id, *punctuation]),
        "repetition_penalty": dict(repetition_penalty=1.3),
        "no_repeat_ngram": dict(no_repeat_ngram_size=2),
        "min_new_tokens": dict(min_new_tokens=6, eos_token_id=[tokenizer.eos_token_id, *punctuation]),
        "bad_words": dict(bad_words_ids=[tokenizer(" the").input_ids, tokenizer(" city").input_ids, [punctuation[0]]]),
        "stop_strings": dict(stop_strings=["city", "\n"], tokenizer=tokenizer),
        "max_length": dict(max_length=prompt_length + 9, max_new_tokens=None),
    }[case]


def test_single_prompt(smollm2):
    model, tokenizer = smollm2
    ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    expected = model.generate(ids, max_new_tokens=16, do_sample=False)
    assert torch.equal(pydecode.generate(model, ids, max_new_tokens=16, do_sample=False), expected)


@pytest.mark.parametrize("case", ["batch", "num_return_sequences", "eos_list", "repetition_penalty", "no_repeat_ngram",
                                  "min_new_tokens", "bad_words", "stop_strings", "max_length"])
def test_left_padded_batch(smollm2, batch, case):
    model, tokenizer = smollm2
    kwargs = dict(max_new_tokens=16, do_sample=False)
    kwargs.update(case_kwargs(case, tokenizer, batch.input_ids.shape[1]))
    expected = model.generate(**batch, **kwargs)
    got = pydecode.generate(model, **batch, **kwargs)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("beam", [dict(num_beams=4), dict(num_beams=4, num_return_sequences=2, length_penalty=0.5,
                                                           early_stopping=True)])
def test_beam_search_matches_transformers(smollm2, batch, beam):
    model, tokenizer = smollm2
    kwargs = dict(batch, max_new_tokens=8, do_sample=False, return_dict_in_generate=True, output_scores=True, **beam)
    expected = model.generate(**kwargs)
    got = pydecode.generate(model, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, rtol=0, atol=1e-4)


def test_token_healing_matches_transformers(smollm2):
    """token_healing on prompts cut inside a word: the healed prompt and the continuation equal transformers'."""
    model, tokenizer = smollm2
    prompts = tokenizer(['The link is <a href="http', "I went to the park and saw a b"], return_tensors="pt",
                        padding=True)
    kwargs = dict(max_new_tokens=5, do_sample=False, token_healing=True, tokenizer=tokenizer)
    expected = model.generate(**prompts, **kwargs)
    assert not torch.equal(expected[:, : prompts.input_ids.shape[1]], prompts.input_ids), "nothing was healed"
    assert torch.equal(pydecode.generate(model, **prompts, **kwargs), expected)
    with pytest.raises(ValueError, match="tokenizer"):
        pydecode.generate(model, **prompts, max_new_tokens=2, token_healing=True)
