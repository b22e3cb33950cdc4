"""Beam search family: parity with transformers 5 generate (beam search), with transformers 4.55 golden outputs
(diverse beam search), distributional checks (beam sampling) and bad input."""

import pytest
import torch
from transformers import AutoModelForCausalLM

import pydecode
from pydecode.generation.model.runner import ModelRunner

from tests.fixtures.golden_v4 import case_ids, case_tensors, load_golden, model_path
from tests.generation.models import EOS, padded_batch, tiny_model

EOS_LIST = [EOS, 9, 17, 33, 44, 55, 66, 77, 88, 99]
CASES = {
    "default": dict(num_beams=4, max_new_tokens=10),
    "early_true_lp05_r2": dict(num_beams=3, max_new_tokens=10, early_stopping=True, length_penalty=0.5,
                               num_return_sequences=2),
    "never_lp2_eos_list": dict(num_beams=4, max_new_tokens=10, early_stopping="never", length_penalty=2.0,
                               eos_token_id=EOS_LIST, num_return_sequences=4),
    "false_lp_neg_eos_list": dict(num_beams=5, max_new_tokens=9, length_penalty=-1.0, eos_token_id=EOS_LIST),
    "never_lp0": dict(num_beams=2, max_new_tokens=8, early_stopping="never", length_penalty=0.0,
                      eos_token_id=EOS_LIST),
    "penalties": dict(num_beams=4, max_new_tokens=10, repetition_penalty=1.3, no_repeat_ngram_size=2,
                      min_new_tokens=4, eos_token_id=EOS_LIST),
    "max_length": dict(num_beams=3, max_length=14),
}


def _compare(model, ids, mask, kwargs):
    kwargs = dict(kwargs, return_dict_in_generate=True, output_scores=True, output_logits=True)
    want = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert got.sequences.tolist() == want.sequences.tolist()
    torch.testing.assert_close(got.sequences_scores, want.sequences_scores, atol=1e-5, rtol=1e-5)
    assert got.beam_indices.tolist() == want.beam_indices.tolist()
    assert len(got.scores) == len(want.scores) and len(got.logits) == len(want.logits)
    for a, b in zip(got.scores, want.scores):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    plain = pydecode.generate(model, ids, attention_mask=mask, **dict(kwargs, return_dict_in_generate=False))
    assert plain.tolist() == want.sequences.tolist()  # the fused path (no scores kept) picks the same beams


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_beam_search_matches_transformers(kind, case):
    ids, mask = padded_batch()
    _compare(tiny_model(kind), ids, mask, CASES[case])


def test_single_prompt_without_padding():
    ids, _ = padded_batch(batch=1)
    _compare(tiny_model("llama"), ids, None, dict(num_beams=4, max_new_tokens=12, num_return_sequences=3))


@pytest.mark.parametrize("case,extra", [
    ("default", dict(eos_token_id=EOS_LIST, max_new_tokens=12, early_stopping=True)),
    ("early_true_lp05_r2", dict(eos_token_id=EOS_LIST, max_new_tokens=12)),  # also returns 2 sequences each
    ("never_lp0", dict(max_new_tokens=12)),  # prompts leave twice
])
def test_finished_prompts_leave_the_batch(case, extra, monkeypatch):
    """Prompts whose hypotheses can no longer change stop being computed; every prompt's result stays the same."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(CASES[case], **extra)
    want = model.generate(ids, attention_mask=mask, **kwargs)
    rows, step = [], ModelRunner.step

    def counted(self, tokens, **kw):
        rows.append(len(tokens))
        return step(self, tokens, **kw)

    monkeypatch.setattr(ModelRunner, "step", counted)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert got.tolist() == want.tolist()
    assert rows[0] == 3 * kwargs["num_beams"] and min(rows) < rows[0]


GROUP_CASES = [c for c in load_golden("group_beam") if not c["is_encoder_decoder"]]
_MODELS = {}


@pytest.mark.parametrize("case", GROUP_CASES, ids=case_ids(GROUP_CASES))
def test_diverse_beam_search_matches_golden(case):
    name = case["model"]
    if name not in _MODELS:
        _MODELS[name] = AutoModelForCausalLM.from_pretrained(model_path(name), attn_implementation="eager").eval()
    out = pydecode.generate(_MODELS[name], **case_tensors(case), **case["generate_kwargs"])
    assert out.sequences.tolist() == case["sequences"]
    assert out.beam_indices.tolist() == case["beam_indices"]
    torch.testing.assert_close(out.sequences_scores, torch.tensor(case["sequences_scores"]), atol=1e-5, rtol=1e-5)


SAMPLING = dict(num_beams=4, do_sample=True, top_k=5, temperature=0.8, max_new_tokens=8, eos_token_id=None)


def test_beam_sampling_tokens_are_allowed_and_seeded():
    """Every token lies in the top-k of the model's distribution after its prefix; a seed makes runs repeat."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, seed=7, num_return_sequences=4, **SAMPLING)
    again = pydecode.generate(model, ids, attention_mask=mask, seed=7, num_return_sequences=4, **SAMPLING)
    other = pydecode.generate(model, ids, attention_mask=mask, seed=8, num_return_sequences=4, **SAMPLING)
    assert out.tolist() == again.tolist() and out.tolist() != other.tolist()
    full_mask = torch.cat([mask.repeat_interleave(4, 0), torch.ones(12, out.shape[1] - ids.shape[1])], 1).long()
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(out, attention_mask=full_mask, position_ids=positions).logits
    allowed = logits[:, ids.shape[1] - 1 : -1].topk(SAMPLING["top_k"], dim=-1).indices
    chosen = out[:, ids.shape[1] :, None]
    assert bool((allowed == chosen).any(-1).all())


def test_beam_sampling_draws_differ_across_seeds():
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    draws = {tuple(pydecode.generate(model, ids, attention_mask=mask, seed=s, **SAMPLING).flatten().tolist())
             for s in range(4)}
    assert len(draws) > 1


BAD = {
    "num_beams < 1": (dict(num_beams=0), "num_beams"),
    "num_return_sequences > num_beams": (dict(num_beams=2, num_return_sequences=3), "num_return_sequences"),
    "groups do not divide beams": (dict(num_beams=4, num_beam_groups=3, diversity_penalty=0.5), "divisible"),
    "diversity without groups": (dict(num_beams=4, diversity_penalty=0.5), "num_beam_groups"),
    "groups with sampling": (dict(num_beams=4, num_beam_groups=2, do_sample=True), "do_sample"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_raises(name):
    kwargs, match = BAD[name]
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match=match):
        pydecode.generate(tiny_model("llama"), ids, attention_mask=mask, max_new_tokens=4, **kwargs)
