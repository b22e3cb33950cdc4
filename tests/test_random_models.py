"""Random-weight models of real architectures (benchmarks on machines without the real models) and their byte
tokenizer."""
import pytest
import torch

import pydecode
from pydecode import models, random_models


def test_byte_tokenizer_round_trips_utf8_and_pads_left():
    tokenizer = random_models.byte_tokenizer()
    text = "Héllo, wörld\n\t\x00~ 日本"
    ids = tokenizer(text).input_ids
    assert ids == list(text.encode())
    assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == random_models.EOS_ID
    batch = tokenizer(["a", "abc"], padding=True, return_tensors="pt")
    assert batch.input_ids.tolist() == [[256, 256, 97], [97, 98, 99]]
    assert batch.attention_mask.tolist() == [[0, 0, 1], [1, 1, 1]]


@pytest.mark.parametrize("name,layers,heads,kv_heads,vocab", [
    ("smollm2-random", 30, 9, 3, 49152), ("llama-1b-random", 16, 32, 8, 128256)])
def test_architecture_shapes(name, layers, heads, kv_heads, vocab):
    config = random_models.architecture_config(name)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (
        layers, heads, kv_heads, vocab)
    assert config.eos_token_id == random_models.EOS_ID < vocab


def test_unknown_architecture_is_rejected():
    with pytest.raises(ValueError, match="name must be one of"):
        random_models.architecture_config("llama-70b-random")


def test_load_model_builds_seeded_random_weights(monkeypatch):
    """load_model dispatches the names to random_model; the same seed gives the same weights, and generate runs."""
    tiny = dict(random_models.ARCHITECTURES["smollm2-random"], hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=300)
    monkeypatch.setitem(random_models.ARCHITECTURES, "tiny-random", tiny)
    state = torch.random.get_rng_state()
    model, tokenizer = models.load_model("tiny-random")
    assert torch.equal(torch.random.get_rng_state(), state), "loading changed the caller's random state"
    again, _ = models.load_model("tiny-random")
    assert not model.training and model.config.num_hidden_layers == 2
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    inputs = tokenizer(["Once upon", "a"], padding=True, return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert torch.equal(pydecode.generate(model, **inputs, max_new_tokens=5), expected)
