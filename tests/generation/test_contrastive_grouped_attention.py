"""Contrastive search on an SDPA grouped-query model: the K candidates attend through ``enable_gqa`` (no copy of the
key/value heads) with the numbers of transformers' SDPA attention, bit for bit."""
import contextlib

import pytest
import torch
from transformers.integrations import sdpa_attention

import pydecode
from pydecode.generation.model import grouped_attention
from pydecode.generation.strategies import contrastive

from tests.generation.models import padded_batch, tiny_model


class _Module:
    num_key_value_groups = 3
    is_causal = True


def test_multi_token_query_matches_transformers_sdpa_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, heads, length, 16, generator=g) for heads, length in ((6, 5), (2, 40), (2, 40)))
    allowed = torch.rand(2, 1, 5, 40, generator=g) > 0.3
    mask = torch.zeros(allowed.shape).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    got, _ = grouped_attention.grouped_sdpa_forward(_Module(), query, key, value, mask, scaling=0.25)
    want, _ = sdpa_attention.sdpa_attention_forward(_Module(), query, key, value, mask, scaling=0.25)
    assert got.shape == want.shape == (2, 5, 6, 16)
    assert torch.equal(got, want)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])  # 2 and 4 query heads per key/value head
def test_contrastive_tokens_and_scores_unchanged(kind, monkeypatch):
    model = tiny_model(kind)
    assert model.config._attn_implementation == "sdpa"
    ids, mask = padded_batch()
    kwargs = dict(penalty_alpha=0.6, top_k=4, max_new_tokens=8, return_dict_in_generate=True, output_scores=True)
    calls, forward = [], grouped_attention.grouped_sdpa_forward

    def counted(module, query, *args, **kw):
        calls.append(query.shape[2])
        return forward(module, query, *args, **kw)

    monkeypatch.setattr(grouped_attention, "grouped_sdpa_forward", counted)
    monkeypatch.setitem(grouped_attention.AttentionInterface._global_mapping, grouped_attention.ATTENTION_NAME,
                        counted)
    fast = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert calls.count(4) == 8 * model.config.num_hidden_layers  # every candidate forward went through it
    assert model.config._attn_implementation == "sdpa"  # switched back after the call
    monkeypatch.setattr(contrastive, "grouped_attention", lambda model: contextlib.nullcontext())
    plain = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert fast.sequences.tolist() == plain.sequences.tolist()
    for a, b in zip(fast.scores, plain.scores):
        assert torch.equal(a, b)
