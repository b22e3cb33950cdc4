"""Prompts repeated for beams / return sequences are prefilled once: the model sees B prompt rows, not B * n, and every
strategy returns what it returns when each copy is prefilled (the path transformers takes)."""
import pytest
import torch
from transformers import StaticCache

import pydecode
from pydecode.generation.model.runner import ModelRunner

from tests.generation.models import padded_batch, tiny_model

CASES = {
    "beam search": dict(num_beams=4, num_return_sequences=2, max_new_tokens=6, output_scores=True),
    "beam sampling": dict(num_beams=3, do_sample=True, top_k=8, seed=3, max_new_tokens=6),
    "group beam search": dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, max_new_tokens=6,
                              output_scores=True),
    "sampling, 3 sequences": dict(do_sample=True, num_return_sequences=3, seed=5, max_new_tokens=6),
    "dola sampling, 2 sequences": dict(dola_layers="high", do_sample=True, num_return_sequences=2, seed=2,
                                       max_new_tokens=6),
}


def _prefill_rows(monkeypatch) -> list[int]:
    """Record the batch size of every prefill forward."""
    rows, forward = [], ModelRunner._forward

    def spy(self, input_ids, **kwargs):
        if self.cache.get_seq_length() == 0:
            rows.append(input_ids.shape[0])
        return forward(self, input_ids, **kwargs)

    monkeypatch.setattr(ModelRunner, "_forward", spy)
    return rows


def _generate(kind, kwargs, **extra):
    ids, mask = padded_batch()
    return pydecode.generate(tiny_model(kind), ids, attention_mask=mask, return_dict_in_generate=True,
                             **kwargs, **extra)


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_prefill_runs_once_per_prompt_with_the_same_outputs(kind, case, monkeypatch):
    rows = _prefill_rows(monkeypatch)
    shared = _generate(kind, CASES[case])
    assert rows == [3]  # three prompts, however many rows each becomes
    monkeypatch.setattr(ModelRunner, "_can_share_prefill", lambda self: False)
    each = _generate(kind, CASES[case])
    assert rows[1:] == [3 * (CASES[case].get("num_beams") or CASES[case]["num_return_sequences"])]
    assert shared.sequences.tolist() == each.sequences.tolist()
    if CASES[case].get("output_scores"):
        torch.testing.assert_close(shared.sequences_scores, each.sequences_scores, atol=1e-5, rtol=1e-5)


def test_kivi_cache_is_repeated_after_one_prefill(monkeypatch):
    rows = _prefill_rows(monkeypatch)
    kivi = dict(cache_implementation="kivi", cache_config={"nbits": 4, "group_size": 16, "residual_length": 16})
    shared = _generate("llama", dict(num_beams=3, max_new_tokens=5), **kivi)
    assert rows == [3]
    monkeypatch.setattr(ModelRunner, "_can_share_prefill", lambda self: False)
    each = _generate("llama", dict(num_beams=3, max_new_tokens=5), **kivi)
    assert shared.sequences.tolist() == each.sequences.tolist()


def test_caches_that_cannot_repeat_prefill_every_row(monkeypatch):
    """A static cache is sized for every row up front: the prefill keeps the expanded rows."""
    model = tiny_model("llama")
    rows = _prefill_rows(monkeypatch)
    cache = StaticCache(config=model.config, max_cache_len=32)
    ids, mask = padded_batch()
    pydecode.generate(model, ids, attention_mask=mask, num_beams=2, max_new_tokens=3, past_key_values=cache)
    assert rows == [6]
