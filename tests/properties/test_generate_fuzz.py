"""Fuzzing ``pydecode.generate`` with drawn configurations on tiny random Llama, GPT-2 and T5 models.

Valid configurations (strategy, penalties, bans, stops, lengths, padded batches, ``num_return_sequences``,
streaming, logprobs): never a crash; every id in ``[0, V)``; the streamer sees exactly the returned tokens;
deterministic strategies (greedy, beam search) without pydecode-only options equal transformers 5's
``model.generate``, every output field included (so its shape too). Invalid configurations (one parameter out of its
range or of the wrong type): always a ``ValueError`` / ``TypeError`` naming that parameter, never an ``IndexError``,
a kernel assertion or a hang.
"""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pydecode

from tests.generation.models import EOS, VOCAB, tiny_model
from tests.generation.test_seq2seq import VOCAB as T5_VOCAB
from tests.generation.test_seq2seq import seq2seq_model
from tests.properties.strategies import examples

KINDS = ("llama", "gpt2", "t5")


def model_of(kind):
    return seq2seq_model("t5") if kind == "t5" else tiny_model(kind)


def vocab_of(kind):
    return T5_VOCAB if kind == "t5" else VOCAB


@st.composite
def prompts(draw, kind):
    """(input_ids, attention_mask): left padding for decoder-only models, right padding for T5's encoder."""
    batch = draw(st.integers(1, 3), label="batch")
    length = draw(st.integers(1, 8), label="prompt length")
    vocab, pad = vocab_of(kind), model_of(kind).config.pad_token_id
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**16), label="prompt seed"))
    ids = torch.randint(6, vocab, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    for row in range(batch):
        n = draw(st.integers(0, length - 1), label="padding")
        if n:
            where = slice(length - n, None) if kind == "t5" else slice(0, n)
            ids[row, where], mask[row, where] = pad, 0
    return ids, mask


@st.composite
def configs(draw, kind, deterministic: bool):
    """Keyword arguments of a valid ``generate`` call; ``deterministic``: greedy or beam search, options that
    transformers has too."""
    vocab = vocab_of(kind)
    token = st.integers(6, vocab - 1)
    strategy = draw(st.sampled_from(("greedy", "beam") if deterministic else ("greedy", "sample", "beam",
                                                                              "beam_sample")), label="strategy")
    kwargs = dict(max_new_tokens=draw(st.integers(1, 8), label="max_new_tokens"))
    if strategy in ("beam", "beam_sample"):
        beams = draw(st.integers(2, 3), label="num_beams")
        kwargs |= dict(num_beams=beams, num_return_sequences=draw(st.integers(1, beams)),
                       length_penalty=draw(st.sampled_from((1.0, 0.0, -0.5, 2.0))),
                       early_stopping=draw(st.sampled_from((False, True, "never"))))
    else:
        kwargs["num_return_sequences"] = draw(st.integers(1, 2)) if strategy == "sample" else 1
    kwargs["do_sample"] = strategy in ("sample", "beam_sample")
    if kwargs["do_sample"]:
        kwargs |= dict(temperature=draw(st.sampled_from((1.0, 0.7, 1e-3, 5.0))),
                       top_k=draw(st.sampled_from((0, 1, 5, vocab, vocab + 10))),
                       top_p=draw(st.sampled_from((1.0, 0.9, 0.3, 1e-6))),
                       seed=draw(st.integers(0, 2**40)))
        if draw(st.booleans()):
            kwargs["min_p"] = draw(st.sampled_from((0.05, 0.5, 1.0)))
    if draw(st.booleans(), label="repetition_penalty"):
        kwargs["repetition_penalty"] = draw(st.sampled_from((0.5, 1.3, 5.0)))
    if draw(st.booleans(), label="no_repeat_ngram_size"):
        kwargs["no_repeat_ngram_size"] = draw(st.integers(1, 3))
    if draw(st.booleans(), label="bad_words_ids"):
        kwargs["bad_words_ids"] = draw(st.lists(st.lists(token, min_size=1, max_size=3), min_size=1, max_size=3))
    if draw(st.booleans(), label="suppress_tokens"):
        kwargs["suppress_tokens"] = draw(st.lists(token, min_size=1, max_size=4))
    if draw(st.booleans(), label="eos list"):  # frequent stops: rows finish at different steps
        kwargs["eos_token_id"] = draw(st.lists(token, min_size=1, max_size=30, unique=True))
        if draw(st.booleans()):
            kwargs["min_new_tokens"] = draw(st.integers(0, kwargs["max_new_tokens"]))
    if draw(st.booleans(), label="outputs"):
        kwargs |= dict(return_dict_in_generate=True, output_scores=draw(st.booleans()),
                       output_logits=draw(st.booleans()))
    if not deterministic:
        if draw(st.booleans(), label="openai penalties"):
            kwargs |= dict(frequency_penalty=draw(st.sampled_from((-2.0, 0.5, 2.0))),
                           presence_penalty=draw(st.sampled_from((-2.0, 0.5, 2.0))))
        if draw(st.booleans(), label="logprobs"):
            kwargs |= dict(return_dict_in_generate=True, output_logprobs=True,
                           top_logprobs=draw(st.integers(0, 5)))
    return kwargs


class Recorder:
    """A streamer keeping what it was given: the prompt first, then one (B,) tensor of new tokens per step."""

    def __init__(self):
        self.chunks, self.ended = [], 0

    def put(self, value):
        self.chunks.append(value.clone())

    def end(self):
        self.ended += 1


def _sequences(out):
    return out.sequences if hasattr(out, "sequences") else out


def assert_same_output(got, expected):
    """Every field transformers returns is present in pydecode's output, with the same value (and shape)."""
    if isinstance(expected, torch.Tensor):
        assert torch.equal(got, expected)
        return
    for name, value in expected.items():
        if value is None or not isinstance(value, (torch.Tensor, tuple)):  # the cache object is not compared
            continue
        mine = getattr(got, name)
        if isinstance(value, torch.Tensor):
            assert mine.shape == value.shape, name
            torch.testing.assert_close(mine, value, rtol=1e-4, atol=1e-4, msg=name)
        else:  # tuples of per-step tensors
            assert len(mine) == len(value), name
            for a, b in zip(mine, value):
                assert a.shape == b.shape, name
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, equal_nan=True, msg=name)


@settings(max_examples=examples(1.0))
@given(data=st.data())
def test_deterministic_configs_equal_transformers(data):
    kind = data.draw(st.sampled_from(KINDS), label="model")
    ids, mask = data.draw(prompts(kind), label="prompt")
    kwargs = data.draw(configs(kind, deterministic=True), label="config")
    model = model_of(kind)
    expected = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert_same_output(got, expected)


@settings(max_examples=examples(1.0))
@given(data=st.data())
def test_any_valid_config_runs_with_valid_ids(data):
    kind = data.draw(st.sampled_from(KINDS), label="model")
    ids, mask = data.draw(prompts(kind), label="prompt")
    kwargs = data.draw(configs(kind, deterministic=False), label="config")
    streamer = Recorder() if kwargs["num_return_sequences"] == 1 and kwargs.get("num_beams", 1) == 1 else None
    out = pydecode.generate(model_of(kind), ids, attention_mask=mask, streamer=streamer, **kwargs)
    sequences = _sequences(out)
    rows = ids.shape[0] * kwargs["num_return_sequences"]
    assert sequences.shape[0] == rows and sequences.dtype == torch.long
    assert bool(((sequences >= 0) & (sequences < vocab_of(kind))).all())
    new = sequences.shape[1] - (1 if kind == "t5" else ids.shape[1])
    assert 1 <= new <= kwargs["max_new_tokens"]
    if kwargs.get("output_scores"):
        scored_rows = ids.shape[0] * kwargs.get("num_beams", kwargs["num_return_sequences"])
        assert len(out.scores) == new and all(s.shape == (scored_rows, vocab_of(kind)) for s in out.scores)
    if kwargs.get("output_logprobs"):
        assert out.logprobs.shape == (rows, new) and out.processed_logprobs.shape == (rows, new)
        assert bool((out.logprobs <= 1e-5).all()), "a log-probability above 0"
    if streamer is not None:
        assert streamer.ended == 1
        streamed = torch.stack([c.reshape(-1) for c in streamer.chunks[1:]], dim=1)
        assert torch.equal(streamed, sequences[:, -streamed.shape[1]:]), "the streamer saw other tokens"


BAD_VALUES = {
    "temperature": (-0.5, math.nan, math.inf, "hot", torch.tensor([1.0, 0.5, 0.2, 0.1])),
    "top_k": (-1, 2.5, "many", torch.tensor([1.5, 2.0, 3.0, 4.0])),
    "top_p": (0.0, 1.5, math.nan, -1.0),
    "min_p": (-0.1, 1.5, math.nan),
    "typical_p": (0.0, 2.0),
    "repetition_penalty": (0.0, -1.0, math.nan),
    "frequency_penalty": (3.0, -2.5, math.nan),
    "presence_penalty": (2.5, -3.0),
    "max_new_tokens": (0, -3, 2.5, "ten"),
    "num_beams": (0, -1, 1.5),
    "num_return_sequences": (0, -1, 99),
    "no_repeat_ngram_size": (-1, 1.5),
    "bad_words_ids": ([[-1]], [[VOCAB + 7]], [[]], [5], "words"),
    "suppress_tokens": ([-3], [VOCAB + 1]),
    "eos_token_id": (VOCAB + 10, [EOS, VOCAB + 3]),  # a negative id is valid: never stops (transformers' -1)
    "min_new_tokens": (-1, 1.5),
    "top_logprobs": (-1, 1.5, VOCAB + 1),
    "seed": ("seed", 1.5, torch.tensor([1, 2, 3, 4, 5])),
}


@settings(max_examples=examples(1.0))
@given(data=st.data())
def test_invalid_configs_raise_errors_naming_the_parameter(data):
    kind = data.draw(st.sampled_from(("llama", "gpt2")), label="model")
    ids, mask = data.draw(prompts(kind), label="prompt")
    kwargs = data.draw(configs(kind, deterministic=False), label="valid config")
    name = data.draw(st.sampled_from(sorted(BAD_VALUES)), label="bad parameter")
    kwargs[name] = data.draw(st.sampled_from(BAD_VALUES[name]), label="bad value")
    if name in ("temperature", "top_k", "top_p", "min_p", "typical_p", "seed"):
        kwargs["do_sample"] = True
    if name == "num_return_sequences" and kwargs[name] == 99:
        kwargs["num_beams"] = 3
    with pytest.raises((ValueError, TypeError)) as error:
        pydecode.generate(model_of(kind), ids, attention_mask=mask, **kwargs)
    assert name in str(error.value), f"{type(error.value).__name__} not naming {name}: {error.value}"


@pytest.mark.parametrize("bad", [[-3], [VOCAB + 1], [6, -1]])
def test_suppress_tokens_outside_the_vocabulary_raise(bad):
    """Found by the long run (2026-12-07): ids outside [0, V) in suppress_tokens were dropped silently."""
    with pytest.raises(ValueError, match="suppress_tokens"):
        pydecode.generate(model_of("llama"), torch.tensor([[50]]), max_new_tokens=1, do_sample=False,
                          suppress_tokens=bad)

