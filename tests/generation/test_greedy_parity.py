"""Greedy decoding: token-for-token (and scores) parity with transformers' generate on tiny models."""
import pytest
import torch

import pydecode

from tests.generation.models import EOS, padded_batch, tiny_model
from tests.support.devices import model_on_device, on_device

CASES = {
    "plain": dict(max_new_tokens=16),
    "default_length": dict(),
    "max_length": dict(max_length=13),
    "eos_list": dict(max_new_tokens=14, eos_token_id=[EOS, 9, 17, 33, 44, 55, 66, 77, 88, 99, 111]),
    "repetition": dict(max_new_tokens=14, repetition_penalty=1.5),
    "reward_repetition": dict(max_new_tokens=14, repetition_penalty=0.7),
    "no_repeat_ngram": dict(max_new_tokens=14, no_repeat_ngram_size=2),
    "min_new_tokens": dict(max_new_tokens=12, min_new_tokens=6, eos_token_id=[EOS, 9, 17, 33, 44, 55, 66, 77]),
    "bad_words": dict(max_new_tokens=12, bad_words_ids=[[7], [8, 9], [100, 101, 102]]),
    "suppress": dict(max_new_tokens=10, suppress_tokens=[10, 11, 12]),
    "forced_eos": dict(max_new_tokens=8, forced_eos_token_id=EOS),
}


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_greedy_matches_transformers(kind, case):
    model = tiny_model(kind)
    ids, mask = padded_batch()
    kwargs = dict(CASES[case], do_sample=False)
    expected = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["qwen2", "gemma3"])
@pytest.mark.parametrize("case", ["plain", "repetition", "eos_list"])
def test_greedy_matches_transformers_on_more_architectures(kind, case):
    test_greedy_matches_transformers(kind, case)


def test_max_time_stops_generation():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=200, do_sample=False, max_time=1e-9)
    assert out.shape[1] == ids.shape[1] + 1  # the first token is always produced, then the budget is spent


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_scores_and_logits_match_transformers(kind):
    model = tiny_model(kind)
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=6, do_sample=False, repetition_penalty=1.3, no_repeat_ngram_size=3,
                  return_dict_in_generate=True, output_scores=True, output_logits=True)
    expected = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    for ours, theirs in zip(got.scores, expected.scores, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    for ours, theirs in zip(got.logits, expected.logits, strict=True):
        assert torch.equal(ours, theirs)


def test_single_unbatched_prompt_without_mask():
    model = tiny_model("llama")
    ids = torch.tensor([[1, 50, 60, 70]])
    assert torch.equal(pydecode.generate(model, ids, max_new_tokens=9, do_sample=False),
                       model.generate(ids, max_new_tokens=9, do_sample=False))


def test_finished_rows_are_padded_and_loop_stops_early():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    eos = list(range(6, 256, 2))  # half the vocabulary ends a row: rows stop at different steps
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=30, do_sample=False, eos_token_id=eos,
                            pad_token_id=0, return_dict_in_generate=True)
    expected = model.generate(ids, attention_mask=mask, max_new_tokens=30, do_sample=False, eos_token_id=eos,
                              pad_token_id=0)
    assert torch.equal(out.sequences, expected)
    assert out.sequences.shape[1] < ids.shape[1] + 30
    steps = out.sequences.shape[1] - ids.shape[1]
    assert steps <= out.host_syncs <= steps + 2  # one read per step, plus one per compaction of the batch


def test_no_host_sync_without_early_stopping():
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=5, do_sample=False, eos_token_id=None,
                            return_dict_in_generate=True)
    assert out.host_syncs == 0


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_dropping_finished_rows_keeps_parity(kind):
    model = tiny_model(kind)
    ids = torch.randint(6, 256, (8, 5), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    eos = list(range(6, 256, 9))  # rows end at scattered steps, so the batch is compacted several times
    kwargs = dict(attention_mask=mask, max_new_tokens=25, eos_token_id=eos, pad_token_id=0, repetition_penalty=1.2)
    expected = model.generate(ids, do_sample=False, **kwargs)
    out = pydecode.generate(model, ids, do_sample=False, return_dict_in_generate=True, **kwargs)
    assert torch.equal(out.sequences, expected)
    if kind == "llama":  # on this model most rows end early, so the batch is compacted (an extra read each time)
        assert out.host_syncs > out.sequences.shape[1] - ids.shape[1]
    sampled = [pydecode.generate(model, ids[r:r + 1], do_sample=True, top_k=0, seed=torch.tensor([r]),
                                 **{**kwargs, "attention_mask": mask[r:r + 1]}) for r in range(8)]
    batched = pydecode.generate(model, ids, do_sample=True, top_k=0, seed=torch.arange(8), **kwargs)
    for r in range(8):
        assert torch.equal(batched[r, :sampled[r].shape[1]], sampled[r][0])


@pytest.mark.parametrize("case", ["repetition", "no_repeat_ngram", "eos_list"])
def test_greedy_parity_on_every_backend(backend, case):
    """The foundation's parity holds whichever backend runs the penalties and the draw (Triton: interpreter)."""
    model = model_on_device(tiny_model("llama"))
    ids, mask = padded_batch()
    kwargs = dict(CASES[case], do_sample=False, frequency_penalty=0.0)
    expected = on_device(model.generate, ids, attention_mask=mask,
                         **{k: v for k, v in kwargs.items() if k != "frequency_penalty"})
    assert torch.equal(on_device(pydecode.generate, model, ids, attention_mask=mask, backend=backend, **kwargs),
                       expected)
