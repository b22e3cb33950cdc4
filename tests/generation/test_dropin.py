"""Drop-in fidelity with transformers 5 ``model.generate`` where the conformance suite found differences: per-position
model inputs (GPT-2 ``token_type_ids``), continuing from a caller's cache, ``use_cache=False``, transformers' ``-1``
special-token idiom, static caches (encoder-decoder, ``inputs_embeds``), compiled decode steps, and attentions /
hidden states of the speculative strategies. Tokens and scores are compared with transformers' own generate."""
import contextlib
import copy

import pytest
import torch
from transformers import CompileConfig

import pydecode
from pydecode.generation.model.positional import PositionalInputs

from tests.generation.models import padded_batch, tiny_model
from tests.generation.test_seq2seq import encoder_batch, seq2seq_model


def assert_like_transformers(model, **kwargs):
    """Greedy / beam ``kwargs`` through both generates: same tokens, scores within float noise; returns pydecode's."""
    kwargs = {"max_new_tokens": 6, "output_scores": True, "return_dict_in_generate": True, **kwargs}
    expected = model.generate(**{k: copy.deepcopy(v) if k == "past_key_values" else v for k, v in kwargs.items()})
    got = pydecode.generate(model, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    assert len(got.scores) == len(expected.scores)
    for ours, theirs in zip(got.scores, expected.scores):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    return got


@contextlib.contextmanager
def eager_attention(model):
    """The shared tiny model with eager attention (which returns attention weights) for the test's duration."""
    before = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        yield model
    finally:
        model.config._attn_implementation = before


def token_types(ids):
    return torch.randint(0, 2, ids.shape, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("case", [
    {}, {"num_beams": 3}, {"cache_implementation": "static"}, {"use_cache": False}, {"prefill_chunk_size": 3},
    {"num_beams": 2, "num_return_sequences": 2, "cache_implementation": "static"},
], ids=["greedy", "beam", "static", "no-cache", "chunked", "beam-static"])
def test_token_type_ids_follow_every_position(case):
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    assert_like_transformers(model, input_ids=ids, attention_mask=mask, token_type_ids=token_types(ids), **case)


def test_token_type_ids_with_inputs_embeds_and_dropped_rows():
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    types = token_types(ids)
    embeds = model.get_input_embeddings()(ids).detach()
    assert_like_transformers(model, input_ids=ids, inputs_embeds=embeds, attention_mask=mask, token_type_ids=types)
    # rows that finish early are dropped from the batch (no per-step outputs recorded): their token types go too
    plain = model.generate(ids, attention_mask=mask, token_type_ids=types, max_new_tokens=8, eos_token_id=None)
    eos = int(plain[1, ids.shape[1] + 2])
    kwargs = dict(attention_mask=mask, token_type_ids=types, max_new_tokens=8, eos_token_id=eos)
    assert torch.equal(pydecode.generate(model, ids, **kwargs), model.generate(ids, **kwargs))


@pytest.mark.parametrize("case", [{"assistant_model": "self"}, {"prompt_lookup_num_tokens": 2}],
                         ids=["assisted", "prompt-lookup"])
def test_token_type_ids_in_speculative_decoding(case):
    model = tiny_model("gpt2")
    ids, mask = padded_batch(batch=1)
    case = {k: (model if v == "self" else v) for k, v in case.items()}
    assert_like_transformers(model, input_ids=ids, attention_mask=mask, token_type_ids=token_types(ids), **case)


def test_positional_inputs_window_and_checks():
    prompt = torch.tensor([[0, 1, 1], [1, 0, 0]])
    inputs = PositionalInputs.take({"token_type_ids": prompt, "mm_token_type_ids": prompt}, 2, 1, 3)
    window = inputs.window(1, 4)
    assert window["token_type_ids"].tolist() == [[1, 1, 1, 1], [0, 0, 0, 0]]  # the last value repeats
    assert window["mm_token_type_ids"].tolist() == [[1, 1, 0, 0], [0, 0, 0, 0]]  # generated positions get 0
    inputs.select_rows(torch.tensor([1]))
    assert inputs.window(3, 1)["token_type_ids"].tolist() == [[0]]
    with pytest.raises(ValueError, match="token_type_ids must be a tensor of shape"):
        PositionalInputs.take({"token_type_ids": prompt[:, :2]}, 2, 1, 3)


@pytest.mark.parametrize("chunk", [None, 2])
def test_continuing_from_a_cache_feeds_only_the_missing_positions(chunk):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    first = model.generate(ids, attention_mask=mask, max_new_tokens=3, return_dict_in_generate=True)
    sequences, cache = first.sequences, first.past_key_values
    held = cache.get_seq_length()
    full_mask = torch.cat([mask, mask.new_ones(mask.shape[0], sequences.shape[1] - mask.shape[1])], 1)
    got = assert_like_transformers(model, input_ids=sequences, attention_mask=full_mask, past_key_values=cache,
                                   prefill_chunk_size=chunk)
    assert got.past_key_values.get_seq_length() == sequences.shape[1] + 5  # not held + the whole prompt again
    assert held == sequences.shape[1] - 1
    with pytest.raises(ValueError, match="already holds"):
        pydecode.generate(model, sequences[:, :held], past_key_values=copy.deepcopy(got.past_key_values),
                          max_new_tokens=2)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_encoder_decoder_continues_from_a_cache(kind):
    model = seq2seq_model(kind)
    ids, mask = encoder_batch(kind)
    common = dict(attention_mask=mask, eos_token_id=None, forced_eos_token_id=None)
    first = model.generate(ids, max_new_tokens=3, return_dict_in_generate=True, **common)
    decoder_ids = first.sequences
    assert_like_transformers(model, input_ids=ids, decoder_input_ids=decoder_ids,
                             decoder_attention_mask=torch.ones_like(decoder_ids), past_key_values=first.past_key_values,
                             **common)


@pytest.mark.parametrize("case", [{}, {"num_beams": 2}], ids=["greedy", "beam"])
@pytest.mark.parametrize("kind", ["llama", "t5", "bart"])
def test_use_cache_false_runs_the_whole_sequence(kind, case):
    if kind == "llama":
        model, (ids, mask) = tiny_model("llama"), padded_batch()
    else:
        model, (ids, mask) = seq2seq_model(kind), encoder_batch(kind)
    with eager_attention(model):
        got = assert_like_transformers(model, input_ids=ids, attention_mask=mask, use_cache=False, **case,
                                       output_hidden_states=True, output_attentions=True)
    hidden = got.hidden_states if kind == "llama" else got.decoder_hidden_states
    prompt = ids.shape[1] if kind == "llama" else 1
    assert [h[-1].shape[1] for h in hidden] == [prompt + i for i in range(len(hidden))]
    assert got.past_key_values is None


def test_negative_special_tokens_mean_never_stop():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    got = assert_like_transformers(model, input_ids=ids, attention_mask=mask, eos_token_id=-1, pad_token_id=-1)
    assert got.sequences.shape[1] == ids.shape[1] + 6


@pytest.mark.parametrize("case", [{}, {"num_beams": 2}], ids=["greedy", "beam"])
@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_static_cache_on_encoder_decoder_models(kind, case):
    model = seq2seq_model(kind)
    ids, mask = encoder_batch(kind)
    got = assert_like_transformers(model, input_ids=ids, attention_mask=mask, cache_implementation="static", **case)
    assert type(got.past_key_values.self_attention_cache).__name__ == "StaticCache"
    assert got.past_key_values.cross_attention_cache.get_max_length(0) == ids.shape[1]


def test_inputs_embeds_alone_with_a_static_cache():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    embeds = model.get_input_embeddings()(ids).detach()
    assert_like_transformers(model, inputs_embeds=embeds, attention_mask=mask, cache_implementation="static")


@pytest.mark.parametrize("kind", ["llama", "bart"])
def test_static_cache_compiles_the_decode_step_as_transformers(kind):
    if kind == "llama":
        model, (ids, mask) = tiny_model("llama"), padded_batch()
    else:
        model, (ids, mask) = seq2seq_model(kind), encoder_batch(kind)
    compile_config = CompileConfig(backend="eager", fullgraph=False)
    compile_config._compile_all_devices = True  # transformers' switch to compile on the CPU too
    vars(model).pop("_compiled_call", None)
    try:
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=3, cache_implementation="static")
        assert "_compiled_call" not in vars(model)  # CPU without compile_config: eager, as transformers
        assert_like_transformers(model, input_ids=ids, attention_mask=mask, cache_implementation="static",
                                 compile_config=compile_config)
        assert "_compiled_call" in vars(model)
    finally:
        vars(model).pop("_compiled_call", None)


@pytest.mark.parametrize("case", [{"assistant_model": "self"}, {"prompt_lookup_num_tokens": 2}],
                         ids=["assisted", "prompt-lookup"])
def test_speculative_attentions_and_hidden_states_per_token(case):
    model = tiny_model("llama")
    ids, _ = padded_batch(batch=1)
    case = {k: (model if v == "self" else v) for k, v in case.items()}
    outputs = dict(output_attentions=True, output_hidden_states=True, eos_token_id=-1)
    with eager_attention(model):
        got = assert_like_transformers(model, input_ids=ids, **outputs, **case)
        expected = model.generate(ids, max_new_tokens=6, return_dict_in_generate=True, **outputs, **case)
        greedy = model.generate(ids, max_new_tokens=6, return_dict_in_generate=True, **outputs)
    for name in ("attentions", "hidden_states"):
        ours, theirs, plain = (getattr(o, name) for o in (got, expected, greedy))
        assert [[t.shape for t in step] for step in ours] == [[t.shape for t in step] for step in theirs]
        for step_ours, step_plain in zip(ours, plain):  # the values are plain greedy decoding's
            for a, b in zip(step_ours, step_plain):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("case", ["same", "other", "prompt-lookup"])
@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_speculative_decoding_on_encoder_decoder_models(kind, case):
    model = seq2seq_model(kind)
    ids, mask = encoder_batch(kind, batch=1)
    if case == "prompt-lookup":
        draft = {"prompt_lookup_num_tokens": 2}
    else:
        torch.manual_seed(5)
        draft = {"assistant_model": model if case == "same" else type(model)(model.config).eval()}
    if kind == "t5" and case == "same":  # transformers' own run fails here (a slice past T5's relative positions)
        draft["max_new_tokens"] = 3
    with eager_attention(model):
        got = assert_like_transformers(model, input_ids=ids, attention_mask=mask, eos_token_id=-1,
                                       output_attentions=True, output_hidden_states=True, **draft)
    new = got.sequences.shape[1] - 1
    assert [a[0].shape[-2:] for a in got.decoder_attentions] == [(1, 1)] + [(1, 2 + i) for i in range(new - 1)]
    assert [h[0].shape[1] for h in got.decoder_hidden_states] == [1] * new
    assert [c[0].shape[-2:] for c in got.cross_attentions] == [(1, ids.shape[1])] * new
    with pytest.raises(NotImplementedError, match="one prompt at a time"):
        pydecode.generate(model, *encoder_batch(kind), **{**draft, "max_new_tokens": 2})
