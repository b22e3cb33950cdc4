"""Multinomial sampling through generate(): allowed sets, distribution, seeds and per-row parameters."""
import pytest
import torch
from scipy.stats import chisquare

import pydecode
from pydecode.ops.reference import process_logits

from tests.generation.models import VOCAB, padded_batch, tiny_model

ALPHA = 1e-4  # chi-square significance level; seeds are fixed, so a pass is deterministic


def test_top_k_one_equals_greedy():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    greedy = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    sampled = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=1, seed=5)
    assert torch.equal(greedy, sampled)


def test_zero_temperature_rows_are_greedy_beside_sampling_rows():
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    greedy = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    mixed = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=0,
                              temperature=torch.tensor([0.0, 1.5, 0.0]), seed=1)
    assert torch.equal(mixed[[0, 2]], greedy[[0, 2]])
    assert not torch.equal(mixed[1], greedy[1])


@pytest.mark.parametrize("warpers", [dict(top_k=7), dict(top_p=0.6), dict(min_p=0.2, temperature=0.7),
                                     dict(top_k=20, top_p=0.9, min_p=0.05), dict(typical_p=0.5),
                                     dict(top_h=0.5, eta_cutoff=0.01), dict(epsilon_cutoff=0.01, top_k=30)])
def test_every_draw_lies_in_the_allowed_set(warpers):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=12, do_sample=True, seed=11,
                            eos_token_id=None, num_return_sequences=3, return_dict_in_generate=True,
                            output_scores=True, **warpers)
    new = out.sequences[:, ids.shape[1]:]
    for step, scores in enumerate(out.scores):
        assert torch.isfinite(scores.gather(1, new[:, step:step + 1])).all()
        assert (torch.isfinite(scores).sum(1) < VOCAB).all() or "typical_p" in warpers


@pytest.mark.parametrize("warpers", [dict(temperature=1.0, top_k=0), dict(temperature=0.8, top_k=30, top_p=0.9)])
def test_first_token_frequencies_match_the_processed_distribution(warpers):
    model = tiny_model("llama")
    prompt = torch.tensor([[1, 40, 41, 42, 43]])
    rows = 6000
    with torch.no_grad():
        logits = model(prompt).logits[:, -1].float()
    processed = process_logits(logits, warpers["temperature"], warpers["top_k"], warpers.get("top_p", 1.0), 0.0)
    probs = processed.softmax(-1)[0]
    out = pydecode.generate(model, prompt.expand(rows, -1), max_new_tokens=1, do_sample=True,
                            seed=torch.arange(rows) * 7919, **warpers)
    counts = torch.bincount(out[:, -1], minlength=VOCAB).double()
    support = probs > 0
    assert counts[~support].sum() == 0
    expected = probs[support].double() * rows
    # pool rare tokens into one bin so every expected count is >= 5
    rare = expected < 5
    obs, exp = counts[support][~rare], expected[~rare]
    if rare.any():
        obs = torch.cat([obs, counts[support][rare].sum(0, keepdim=True)])
        exp = torch.cat([exp, expected[rare].sum(0, keepdim=True)])
    exp *= obs.sum() / exp.sum()  # float32 probabilities: renormalise the expected counts exactly
    assert chisquare(obs.numpy(), exp.numpy()).pvalue > ALPHA


def test_seed_reproduces_and_different_seeds_differ():
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    kwargs = dict(attention_mask=mask, max_new_tokens=12, do_sample=True, top_k=0)
    a = pydecode.generate(model, ids, seed=123, **kwargs)
    b = pydecode.generate(model, ids, seed=123, **kwargs)
    c = pydecode.generate(model, ids, seed=124, **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_torch_seed_reproduces_without_a_seed_argument():
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    torch.manual_seed(9)
    a = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=8, do_sample=True)
    torch.manual_seed(9)
    b = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=8, do_sample=True)
    assert torch.equal(a, b)


def test_per_row_parameters_equal_each_row_run_alone():
    model = tiny_model("llama")
    ids = torch.randint(6, VOCAB, (3, 6), generator=torch.Generator().manual_seed(3))
    per_row = dict(temperature=torch.tensor([0.7, 1.2, 0.0]), top_k=torch.tensor([5, 0, 3]),
                   top_p=torch.tensor([0.9, 1.0, 0.5]), min_p=torch.tensor([0.0, 0.1, 0.0]),
                   repetition_penalty=torch.tensor([1.0, 1.3, 1.1]), frequency_penalty=torch.tensor([0.0, 0.5, 0.0]),
                   presence_penalty=torch.tensor([0.2, 0.0, 0.0]))
    seeds = torch.tensor([10, 20, 30])
    batched = pydecode.generate(model, ids, max_new_tokens=10, do_sample=True, seed=seeds, **per_row)
    for row in range(3):
        alone = pydecode.generate(model, ids[row:row + 1], max_new_tokens=10, do_sample=True, seed=seeds[row:row + 1],
                                  **{k: v[row].item() for k, v in per_row.items()})
        assert torch.equal(batched[row], alone[0]), row


def test_num_return_sequences_rows_differ_and_keep_their_prompt():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=0,
                            num_return_sequences=4, seed=0)
    assert out.shape == (12, ids.shape[1] + 8)
    assert torch.equal(out[:, :ids.shape[1]], ids.repeat_interleave(4, dim=0))
    assert len({tuple(r.tolist()) for r in out[:4]}) > 1


def test_logprobs_are_reported():
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=5, do_sample=True, top_k=10, seed=2,
                            return_dict_in_generate=True, output_logits=True, top_logprobs=4)
    new = out.sequences[:, ids.shape[1]:]
    raw = torch.stack(out.logits, 1).log_softmax(-1)
    torch.testing.assert_close(out.logprobs, raw.gather(2, new[..., None])[..., 0])
    assert out.top_logprobs.shape == (3, 5, 4) and out.top_logprob_ids.shape == (3, 5, 4)
    torch.testing.assert_close(out.top_logprobs[..., 0], raw.max(-1).values)
    assert (out.processed_logprobs >= out.logprobs - 1e-5).all()  # top-k renormalises: processed >= raw


@pytest.mark.parametrize("penalty", [1.0, 1.3], ids=["plain", "repetition-penalty"])
def test_fused_logprobs_equal_the_recorded_scores_path(penalty):
    """Logprobs from the sampling kernel (no scores recorded) equal those computed from the recorded processed scores;
    positions after a row finished hold zeros."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=True, top_k=20, top_p=0.9, temperature=0.8,
                  repetition_penalty=penalty, seed=3, eos_token_id=[5, 9], pad_token_id=0,
                  return_dict_in_generate=True, output_logprobs=True, top_logprobs=2)
    fused = pydecode.generate(model, ids, **kwargs)
    recorded = pydecode.generate(model, ids, output_scores=True, **kwargs)
    assert torch.equal(fused.sequences, recorded.sequences)
    for name in ("logprobs", "processed_logprobs", "top_logprobs"):
        torch.testing.assert_close(getattr(fused, name), getattr(recorded, name), rtol=1e-5, atol=1e-5)
    new = fused.sequences[:, ids.shape[1]:]
    finished = torch.isin(new, torch.tensor([5, 9])).long().cumsum(1).roll(1, 1)
    finished[:, 0] = 0
    after = finished > 0
    assert bool((fused.logprobs[after] == 0).all()) and bool((fused.processed_logprobs[after] == 0).all())
