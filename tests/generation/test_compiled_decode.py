"""generate(compile=True): one graph per decoding step, no recompilation, the same tokens as eager decoding."""
import copy

import pytest
import torch
from torch._dynamo.utils import counters

import pydecode
from pydecode.generation.compile_options import COMPILED, clear_compiled

from tests.generation.models import EOS, padded_batch, tiny_model

EOS_LIST = [EOS, 9, 17, 33, 44, 55, 66, 77, 88, 99, 111]  # rows finish at different steps


def graphs() -> int:
    """Graphs dynamo has compiled in this process so far."""
    return counters["stats"]["unique_graphs"]


def both(model, ids, mask, compile_settings, **kwargs):
    """(eager pydecode, compiled pydecode) sequences of one call."""
    eager = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    return eager, pydecode.generate(model, ids, attention_mask=mask, compile=compile_settings, **kwargs)


def test_one_graph_without_breaks_or_recompilation():
    """Dynamo alone (no Inductor, fast): the step is one graph, reused by later steps and by a second call of the
    same bucket with another prompt length and max_new_tokens; a new bucket compiles one more."""
    model = tiny_model("llama")
    clear_compiled(model)
    settings = {"backend": "eager"}
    ids, mask = padded_batch()
    before, breaks = graphs(), sum(counters["graph_break"].values())
    eager, compiled = both(model, ids, mask, settings, max_new_tokens=12, do_sample=False, eos_token_id=EOS_LIST)
    assert torch.equal(compiled, eager)
    assert compiled.shape[1] < ids.shape[1] + 12, "eos must end the rows mid-way for this test to mean something"
    assert graphs() - before == 1
    longer, longer_mask = padded_batch(length=11, seed=1)
    eager, compiled = both(model, longer, longer_mask, settings, max_new_tokens=30, do_sample=False,
                           eos_token_id=EOS_LIST)
    assert torch.equal(compiled, eager)
    assert graphs() - before == 1, "a call of the same bucket must reuse the graph"
    pydecode.generate(model, ids, attention_mask=mask, compile=settings, max_new_tokens=300, do_sample=False,
                      eos_token_id=EOS_LIST)
    assert graphs() - before == 2, "a longer bucket compiles once more"
    assert sum(counters["graph_break"].values()) == breaks


@pytest.mark.parametrize("value, error", [
    ("yes", TypeError), ({"modee": "max-autotune"}, ValueError), ({"mode": 3}, TypeError),
    ({"options": []}, TypeError), ({"stop_check_every": 0}, ValueError),
    ({"mode": "max-autotune", "freezing": True}, ValueError),
])
def test_bad_compile_settings_raise_naming_compile(value, error):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    with pytest.raises(error, match="compile"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, compile=value)


@pytest.mark.parametrize("kwargs, named", [
    (dict(penalty_alpha=0.6, top_k=4), "'contrastive' strategy"),
    (dict(use_cache=False), "use_cache=False"),
    (dict(return_dict_in_generate=True, output_scores=True), "return_dict_in_generate"),
])
def test_unsupported_settings_raise_not_implemented(kwargs, named):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    with pytest.raises(NotImplementedError, match=named):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, compile=True, **kwargs)


GREEDY_CASES = {
    "eos_midway": dict(max_new_tokens=14, eos_token_id=EOS_LIST),
    "penalties_and_bans": dict(max_new_tokens=14, repetition_penalty=1.5, no_repeat_ngram_size=2,
                               bad_words_ids=[[7], [8, 9]], suppress_tokens=[10, 11]),
    "min_new_tokens": dict(max_new_tokens=12, min_new_tokens=6, eos_token_id=EOS_LIST),
}


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("case", sorted(GREEDY_CASES))
def test_greedy_matches_eager_and_transformers(kind, case):
    """Inductor: fp32 greedy tokens equal eager pydecode's and transformers' (padding; finished rows emit pad)."""
    model = tiny_model(kind)
    ids, mask = padded_batch()
    kwargs = dict(GREEDY_CASES[case], do_sample=False)
    eager, compiled = both(model, ids, mask, True, **kwargs)
    assert torch.equal(compiled, eager)
    assert torch.equal(compiled, model.generate(ids, attention_mask=mask, **kwargs))


def test_seeded_sampling_matches_eager():
    """The draw reads the same counter-based streams as eager decoding: the same tokens for the same seed, with
    per-row temperatures (one greedy row) and the warpers."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=16, do_sample=True, seed=7, top_k=40, top_p=0.9, min_p=0.02,
                  temperature=torch.tensor([0.0, 0.8, 1.3]), frequency_penalty=0.4, eos_token_id=EOS_LIST)
    eager, compiled = both(model, ids, mask, True, **kwargs)
    assert torch.equal(compiled, eager)


def test_inductor_graph_is_reused_across_calls():
    model = tiny_model("gpt2")
    clear_compiled(model)
    ids, mask = padded_batch()
    pydecode.generate(model, ids, attention_mask=mask, compile=True, max_new_tokens=8, do_sample=False)
    before = graphs()
    longer, longer_mask = padded_batch(length=12, seed=2)
    eager, compiled = both(model, longer, longer_mask, True, max_new_tokens=20, do_sample=False)
    assert torch.equal(compiled, eager)
    assert graphs() == before


def test_cpu_passes_route_matmuls_and_drop_grouped_attention_copies():
    """Inductor on the CPU: every few-row matmul of the step (7 per layer and the head) runs decode_linear and each
    layer's attention reads the key / value heads without repeating them, with the tokens of the step compiled
    without the matmul rewrite (and of eager decoding)."""
    model = tiny_model("llama")  # 4 query heads over 2 key / value heads
    layers = model.config.num_hidden_layers
    clear_compiled(model)
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=10, do_sample=False)
    with torch._inductor.config.patch(fx_graph_cache=False):  # a cached graph would skip the passes
        plain = pydecode.generate(model, ids, attention_mask=mask, compile={"decode_linear": False}, **kwargs)
        eager, routed = both(model, ids, mask, True, **kwargs)
    assert torch.equal(routed, plain) and torch.equal(routed, eager)
    counts = sorted((graph.inductor_patch["post_grad_custom_post_pass"].counts["decode_linear"],
                     graph.inductor_patch["post_grad_custom_post_pass"].counts["gqa_attention"])
                    for graph in COMPILED[model].values())
    assert counts == [(0, layers), (7 * layers + 1, layers)]


def test_cpu_passes_route_bfloat16_matmuls_where_the_cpu_has_bf16_dot_products():
    """bfloat16 weights: the matmuls run decode_linear exactly where its AVX-512 BF16 kernel runs (elsewhere oneDNN
    stays faster). bfloat16 sums in another order round differently now and then, so the tokens are held to most of
    eager's, not all (a wrong kernel would agree with almost none)."""
    model = copy.deepcopy(tiny_model("llama")).to(torch.bfloat16)
    layers = model.config.num_hidden_layers
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=16, do_sample=False)
    with torch._inductor.config.patch(fx_graph_cache=False):
        eager, compiled = both(model, ids, mask, True, **kwargs)
    (graph,) = COMPILED[model].values()
    routed = 7 * layers + 1 if torch.ops.pydecode.bf16_dot_products() else 0
    counts = graph.inductor_patch["post_grad_custom_post_pass"].counts
    assert (counts["decode_linear"], counts["gqa_attention"]) == (routed, layers)
    assert compiled.shape == eager.shape
    assert (compiled == eager).float().mean() >= 0.9
