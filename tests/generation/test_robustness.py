"""Bad input raises clear errors; NaN/Inf logits never crash or yield out-of-range tokens."""
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

import pydecode

from tests.generation.models import VOCAB, padded_batch, tiny_model

BAD = [
    (dict(do_sample=True, temperature=-0.5), "temperature"),
    (dict(do_sample=True, top_p=0.0), "top_p"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, top_k=-1), "top_k"),
    (dict(do_sample=True, min_p=1.5), "min_p"),
    (dict(do_sample=True, typical_p=0.0), "typical_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(frequency_penalty=3.0), "frequency_penalty"),
    (dict(presence_penalty=-2.5), "presence_penalty"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(do_sample=True, temperature=torch.tensor([1.0, 0.5])), "temperature"),
    (dict(do_sample=True, top_k=torch.tensor([1, 2, -3])), "top_k"),
    (dict(do_sample=True, seed=torch.tensor([1, 2])), "seed"),
    (dict(top_logprobs=-1), "top_logprobs"),
    # found by the generate() fuzzer (tests/properties/test_generate_fuzz.py)
    (dict(top_logprobs=VOCAB + 1, num_beams=2), "top_logprobs"),
    (dict(top_logprobs=VOCAB + 1), "top_logprobs"),
    (dict(bad_words_ids=[5]), "bad_words_ids"),
    (dict(bad_words_ids=[[]]), "bad_words_ids"),
    (dict(max_new_tokens="ten"), "max_new_tokens"),  # transformers' own check failed on it without naming it
    (dict(num_beams="two"), "num_beams"),
]


@pytest.mark.parametrize("kwargs,name", BAD, ids=[n for _, n in BAD])
def test_invalid_parameter_raises_value_error_naming_it(kwargs, name):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match=name):
        pydecode.generate(model, ids, attention_mask=mask, **{"max_new_tokens": 3, **kwargs})


def test_bad_inputs_raise():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="input_ids"):
        pydecode.generate(model, torch.zeros(1, 0, dtype=torch.long), max_new_tokens=2)
    with pytest.raises(ValueError, match="input_ids"):
        pydecode.generate(model, torch.tensor([[1, VOCAB + 5]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="input_ids"):
        pydecode.generate(model, torch.tensor([[1, -2]]), max_new_tokens=2)
    with pytest.raises(TypeError, match="input_ids"):
        pydecode.generate(model, torch.tensor([[1.0, 2.0]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_mask"):
        pydecode.generate(model, torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3), max_new_tokens=2)
    with pytest.raises(ValueError, match="stop_strings"):
        pydecode.generate(model, torch.tensor([[1, 2]]), max_new_tokens=2, stop_strings=["x"])


def test_unimplemented_features_raise_instead_of_being_ignored():
    model = tiny_model("llama")
    for name, value in (("force_words_ids", [[7]]), ("assistant_ensemble_weight", 0.5), ("use_mtp", True)):
        with pytest.raises(NotImplementedError, match=name):
            pydecode.generate(model, torch.tensor([[1, 2]]), max_new_tokens=2, **{name: value})


class _Poison(LogitsProcessor):
    """Row 0 all NaN, row 1 all -inf, row 2 one +inf and some NaN."""

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[0] = float("nan")
        scores[1] = float("-inf")
        scores[2, 17] = float("inf")
        scores[2, :10] = float("nan")
        return scores


@pytest.mark.parametrize("sampling", [dict(do_sample=False), dict(do_sample=True, top_k=5, top_p=0.9, seed=1),
                                      dict(do_sample=True, top_k=0, repetition_penalty=1.2, frequency_penalty=0.5)])
def test_nan_and_inf_logits_never_crash_or_escape_the_vocab(sampling):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=4, eos_token_id=None,
                            logits_processor=LogitsProcessorList([_Poison()]), **sampling)
    new = out[:, ids.shape[1]:]
    assert ((new >= 0) & (new < VOCAB)).all()
    assert (new[2] == 17).all()


def test_unknown_keywords_raise_like_transformers():
    """A typo in a generation parameter (or a keyword no one uses) is an error, not silently ignored."""
    model = tiny_model("llama")
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="temprature"):
        pydecode.generate(model, ids, max_new_tokens=2, temprature=0.5)
    with pytest.raises(NotImplementedError, match="assistant_tokenizer"):
        pydecode.generate(model, ids, max_new_tokens=2, assistant_model=model, assistant_tokenizer=object(),
                          tokenizer=object())
    with pytest.raises(NotImplementedError, match="synced_gpus"):
        pydecode.generate(model, ids, max_new_tokens=2, synced_gpus=True)
    out = pydecode.generate(model, ids, max_new_tokens=2, synced_gpus=False, logits_to_keep=1)  # accepted keywords
    assert out.shape == (1, 5)
