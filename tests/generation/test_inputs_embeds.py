"""Prompts given as ``inputs_embeds``: token and score parity with transformers 5, alone or beside ``input_ids``,
through greedy decoding, sampling (the first step's distribution) and beam search, and bad input."""
import pytest
import torch

import pydecode

from tests.generation.models import padded_batch, tiny_model

CASES = {
    "greedy": dict(max_new_tokens=6, do_sample=False),
    "lengths": dict(max_length=12, min_length=10, eos_token_id=[5, 9, 17, 33], do_sample=False),
    "beam": dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, do_sample=False),
}


def embedded(model, ids):
    with torch.no_grad():
        return model.get_input_embeddings()(ids)


@pytest.mark.parametrize("kind", ["llama", "gpt2", "gemma3"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("with_ids", [False, True], ids=["embeds", "embeds_and_ids"])
def test_inputs_embeds_match_transformers(kind, case, with_ids):
    """Alone, the output holds only the new tokens and a caller's max_length / min_length count the embedded
    positions; beside input_ids it starts with them."""
    model = tiny_model(kind)
    ids, mask = padded_batch()
    kwargs = dict(CASES[case], inputs_embeds=embedded(model, ids), attention_mask=mask, return_dict_in_generate=True,
                  output_scores=True, **(dict(input_ids=ids) if with_ids else {}))
    want = model.generate(**kwargs)
    got = pydecode.generate(model, **kwargs)
    assert got.sequences.tolist() == want.sequences.tolist()
    assert got.sequences.shape[1] == want.sequences.shape[1] < ids.shape[1] or with_ids
    for ours, theirs in zip(got.scores, want.scores, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_inputs_embeds_sampling_and_penalties_match_transformers():
    """Sampling's first distribution, and the penalties on the generated tokens only (an unpadded batch: with left
    padding transformers also skips that many generated tokens for the repetition penalty, which pydecode does not)."""
    model = tiny_model("llama")
    ids = padded_batch()[0][:, 3:]
    kwargs = dict(inputs_embeds=embedded(model, ids), return_dict_in_generate=True, output_scores=True)
    penalised = dict(kwargs, max_new_tokens=8, do_sample=False, repetition_penalty=1.5, no_repeat_ngram_size=2)
    want = model.generate(**penalised)
    assert want.sequences.tolist() != model.generate(**dict(penalised, repetition_penalty=1.0,
                                                            no_repeat_ngram_size=0)).sequences.tolist()
    assert pydecode.generate(model, **penalised).sequences.tolist() == want.sequences.tolist()
    sampled = dict(kwargs, max_new_tokens=1, do_sample=True, top_k=5, temperature=0.7)
    torch.testing.assert_close(pydecode.generate(model, **sampled).scores[0], model.generate(**sampled).scores[0])


def test_bad_inputs_embeds_raise():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    embeds = embedded(model, ids)
    with pytest.raises(ValueError, match="inputs_embeds must be a float tensor"):
        pydecode.generate(model, inputs_embeds=embeds[..., :5], max_new_tokens=2)
    with pytest.raises(ValueError, match="attention_mask"):
        pydecode.generate(model, inputs_embeds=embeds, attention_mask=mask[:, 1:], max_new_tokens=2)
    with pytest.raises(ValueError, match="one id per embedded position"):
        pydecode.generate(model, ids[:, 1:], inputs_embeds=embeds, max_new_tokens=2)
    with pytest.raises(NotImplementedError, match="inputs_embeds"):
        pydecode.generate(model, inputs_embeds=embeds, max_new_tokens=2, penalty_alpha=0.5, top_k=3)
    with pytest.raises(NotImplementedError, match="inputs_embeds"):
        pydecode.generate(model, inputs_embeds=embeds, max_new_tokens=2, prefill_chunk_size=3)
