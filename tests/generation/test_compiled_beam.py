"""generate(compile=...) for beam search and beam sampling: one graph per step, no recompilation, the same tokens as
eager pydecode (which equals transformers), and step state that keeps its storage across calls."""
import pytest
import torch
from torch._dynamo.utils import counters
from transformers import GenerationConfig

import pydecode
from pydecode.generation.compile_options import COMPILED, clear_compiled
from pydecode.generation.strategies import COMPILED_RUNS, choose

from tests.generation.models import EOS, padded_batch, tiny_model

EOS_LIST = [EOS, 9, 17, 33, 44, 55, 66, 77, 88, 99, 111]  # hypotheses finish at different steps
DYNAMO = {"backend": "eager"}  # dynamo only: the graph is traced and checked, no Inductor compile


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def breaks() -> int:
    return sum(counters["graph_break"].values())


def both(model, ids, mask, settings, **kwargs):
    """(eager pydecode, compiled pydecode) sequences of one call."""
    eager = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    return eager, pydecode.generate(model, ids, attention_mask=mask, compile=settings, **kwargs)


BEAM_CASES = {
    "plain": dict(num_beams=3, max_new_tokens=10),
    "eos_list_returns_2": dict(num_beams=4, num_return_sequences=2, max_new_tokens=12, eos_token_id=EOS_LIST),
    "early_stopping_true": dict(num_beams=3, max_new_tokens=12, eos_token_id=EOS_LIST, early_stopping=True),
    "never_long_penalty": dict(num_beams=3, max_new_tokens=12, eos_token_id=EOS_LIST, early_stopping="never",
                               length_penalty=2.0),
    "short_penalty": dict(num_beams=2, max_new_tokens=12, eos_token_id=EOS_LIST, length_penalty=-0.5),
    "processors": dict(num_beams=3, max_new_tokens=10, eos_token_id=EOS_LIST, repetition_penalty=1.5,
                       no_repeat_ngram_size=2, min_new_tokens=4, frequency_penalty=0.3),
    "beam_sampling": dict(num_beams=3, max_new_tokens=10, eos_token_id=EOS_LIST, do_sample=True, seed=3, top_k=20,
                          temperature=0.9),
}


@pytest.mark.parametrize("case", sorted(BEAM_CASES))
def test_beam_tokens_equal_eager(case):
    """Dynamo: compiled beam search / sampling gives eager pydecode's tokens (padded prompts of 3 lengths)."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    eager, compiled = both(model, ids, mask, DYNAMO, **{"do_sample": False, **BEAM_CASES[case]})
    assert torch.equal(compiled, eager)


@pytest.mark.parametrize("kwargs", [
    dict(num_beams=3, num_return_sequences=2, eos_token_id=EOS_LIST, early_stopping=True),
    dict(num_beams=2, eos_token_id=EOS_LIST, do_sample=True, seed=4, top_p=0.8, repetition_penalty=1.2),
])
def test_dict_output_equals_eager(kwargs):
    """return_dict_in_generate: sequences, sequences_scores, beam_indices and the per-step scores / logits of the
    steps eager search runs (the graph may run a few more before the host reads "done")."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    eager, compiled = both(model, ids, mask, {**DYNAMO, "stop_check_every": 3}, max_new_tokens=30,
                           return_dict_in_generate=True, output_scores=True, output_logits=True,
                           **{"do_sample": False, **kwargs})
    assert torch.equal(compiled.sequences, eager.sequences)
    if kwargs.get("early_stopping"):
        assert compiled.sequences.shape[1] < ids.shape[1] + 30, "eos must end the search mid-way"
    assert torch.equal(compiled.beam_indices, eager.beam_indices)
    torch.testing.assert_close(compiled.sequences_scores, eager.sequences_scores, atol=1e-6, rtol=1e-6)
    assert len(compiled.scores) == len(eager.scores) == len(compiled.logits)
    for got, want in zip(compiled.scores + compiled.logits, eager.scores + eager.logits):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_eos_ends_the_search_early_and_equals_transformers():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(num_beams=3, max_new_tokens=40, eos_token_id=EOS_LIST, early_stopping=True, do_sample=False)
    eager, compiled = both(model, ids, mask, DYNAMO, **kwargs)
    assert torch.equal(compiled, eager)
    assert compiled.shape[1] < ids.shape[1] + 40, "eos must end the search mid-way for this test to mean something"
    assert torch.equal(compiled, model.generate(ids, attention_mask=mask, **kwargs))


def test_one_graph_no_breaks_no_recompilation():
    """One graph for every step of a call and for a second call of the same bucket (another prompt length and
    max_new_tokens); the step state keeps its storage across the calls."""
    model = tiny_model("llama")
    clear_compiled(model)
    before, broken = graphs(), breaks()
    kwargs = dict(num_beams=3, eos_token_id=EOS_LIST, do_sample=False, repetition_penalty=1.3)
    ids, mask = padded_batch()
    eager, compiled = both(model, ids, mask, DYNAMO, max_new_tokens=12, **kwargs)
    assert torch.equal(compiled, eager)
    assert graphs() - before == 1
    (graph,) = COMPILED[model].values()
    addresses = [t.data_ptr() for t in graph.state.tensors()]
    longer, longer_mask = padded_batch(length=11, seed=1)
    eager, compiled = both(model, longer, longer_mask, DYNAMO, max_new_tokens=30, **kwargs)
    assert torch.equal(compiled, eager)
    assert graphs() - before == 1, "a call of the same bucket must reuse the graph"
    assert [t.data_ptr() for t in graph.state.tensors()] == addresses
    assert breaks() == broken


def test_sampling_state_keeps_its_storage_across_calls():
    """The greedy / sampling step state is allocated once per graph and refilled in place."""
    model = tiny_model("llama")
    clear_compiled(model)
    kwargs = dict(do_sample=True, seed=5, top_k=30, eos_token_id=EOS_LIST)
    ids, mask = padded_batch()
    eager, compiled = both(model, ids, mask, DYNAMO, max_new_tokens=9, **kwargs)
    assert torch.equal(compiled, eager)
    (graph,) = COMPILED[model].values()
    addresses = [t.data_ptr() for t in graph.state.tensors()]
    first = compiled
    longer, longer_mask = padded_batch(length=10, seed=4)
    eager, compiled = both(model, longer, longer_mask, DYNAMO, max_new_tokens=14, **kwargs)
    assert torch.equal(compiled, eager)
    assert [t.data_ptr() for t in graph.state.tensors()] == addresses
    assert torch.equal(first, pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=9, **kwargs)), \
        "a later call must not overwrite an earlier call's result"


@pytest.mark.parametrize("kwargs, named", [
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5), "num_beam_groups"),
    (dict(num_beams=2, return_dict_in_generate=True, output_attentions=True), "output_attentions"),
    (dict(num_beams=2, return_dict_in_generate=True, output_logprobs=True), "output_logprobs"),
    (dict(num_beams=2, max_time=5.0), "max_time"),
])
def test_unsupported_beam_settings_raise_not_implemented(kwargs, named):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    with pytest.raises(NotImplementedError, match=named):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, compile=True, **kwargs)


@pytest.mark.parametrize("config, compiled", [
    (dict(num_beams=3), "beam"), (dict(num_beams=2, do_sample=True), "beam"), (dict(do_sample=True), "sample"),
    (dict(penalty_alpha=0.6, top_k=4, do_sample=True), "sample"),  # contrastive with do_sample: sampling
    (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5), "num_beam_groups"),
    (dict(penalty_alpha=0.6, top_k=4), "'contrastive' strategy"), (dict(prompt_lookup_num_tokens=3), "prompt_lookup"),
])
def test_choose_names_the_compiled_runner_before_anything_is_built(config, compiled):
    """The strategy choice (config only, no prompt) says which compiled runner decodes the call, or raises."""
    model = tiny_model("llama")
    generation_config = GenerationConfig(**config)
    assert choose(generation_config, model, {}, None).compiled is None
    if compiled not in COMPILED_RUNS:
        with pytest.raises(NotImplementedError, match=compiled):
            choose(generation_config, model, {}, None, {})
    else:
        assert choose(generation_config, model, {}, None, {}).compiled == compiled


def test_inductor_beam_search_matches_eager():
    """Inductor (slow): fp32 beam search tokens equal eager pydecode's."""
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    eager, compiled = both(model, ids, mask, True, max_new_tokens=10, num_beams=3, num_return_sequences=2,
                           eos_token_id=EOS_LIST, do_sample=False)
    assert torch.equal(compiled, eager)


def test_beam_sampling_graph_matches_eager_before_code_generation():
    """Beam sampling's compiled graph (AOT autograd, no Inductor code generation) draws eager's tokens. Under Inductor
    they may part: its generated log / softmax differ from ATen's in the last bit (the counter-based random bits are
    equal, the Gumbel noise differs by 1 ulp in ~1 of 7 values), which moves near-tied samples; README says so."""
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    eager, compiled = both(model, ids, mask, {"backend": "aot_eager"}, max_new_tokens=10, num_beams=2,
                           eos_token_id=EOS_LIST, do_sample=True, seed=1, top_p=0.9)
    assert torch.equal(compiled, eager)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (benchmarks/gpu_run.sh runs this)")
def test_reduce_overhead_cuda_graphs_reuse_the_state():
    """mode="reduce-overhead" on CUDA: the beam and sampling steps replay CUDA graphs over the state, which keeps
    its addresses across calls; tokens equal eager pydecode's (fp32)."""
    model = tiny_model("llama").cuda()
    ids, mask = (t.cuda() for t in padded_batch())
    settings = {"mode": "reduce-overhead"}
    for kwargs in (dict(num_beams=3, eos_token_id=EOS_LIST, do_sample=False, repetition_penalty=1.3),
                   dict(do_sample=True, seed=5, top_k=30, eos_token_id=EOS_LIST)):
        clear_compiled(model)
        eager, compiled = both(model, ids, mask, settings, max_new_tokens=12, **kwargs)
        assert torch.equal(compiled, eager)
        (graph,) = COMPILED[model].values()
        addresses = [t.data_ptr() for t in graph.state.tensors()]
        eager, compiled = both(model, ids[:, 2:], mask[:, 2:], settings, max_new_tokens=20, **kwargs)
        assert torch.equal(compiled, eager)
        assert [t.data_ptr() for t in graph.state.tensors()] == addresses
