"""Every decoding strategy through each backend's kernels (torch, cpp, Triton under the interpreter, and on a machine
without a GPU the CUDA kernels emulated on the CPU): the tokens of transformers, of the 4.55.4 goldens (recorded on
the CPU; on a GPU the reference backend's tokens there stand in), or, for seeded sampling, of the reference backend."""
import copy
import functools

import pytest
import torch
from transformers import AutoModelForCausalLM

import pydecode

from tests.fixtures.golden_v4 import case_tensors, load_golden, model_path
from tests.generation.models import padded_batch, tiny_model
from tests.support.devices import DEVICE, model_on_device, on_device

GOLDEN_IDS = [
    "tiny-llama/contrastive/a0.6_k4/padded/eos",
    "tiny-llama/contrastive/a0.3_k16/padded",
    "tiny-gpt2/contrastive/a0.5_k8/padded/eos_list",
    "tiny-llama/dola/high/rep1.2/padded/eos",
    "tiny-llama/group_beam/nb6_ng3_d1.5_lp1_esTrue_r2_norepeat2_rep1.2_min3/padded",
    "tiny-gpt2/group_beam/nb4_ng2_d0.5_lp-1_esNever_r2_eoslist/padded",
]
GOLDEN = {c["id"]: c for name in ("contrastive", "dola", "group_beam") for c in load_golden(name)}


@functools.lru_cache(maxsize=None)
def _golden_model(name: str):
    return AutoModelForCausalLM.from_pretrained(model_path(name), attn_implementation="eager",
                                                dtype=torch.float32).eval()


@functools.lru_cache(maxsize=None)
def _noisy_draft():
    """The target model with noise on its output layer: a draft that agrees often but not always."""
    draft = copy.deepcopy(tiny_model("llama"))
    with torch.no_grad():
        weight = draft.lm_head.weight
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * weight.std())
    return draft


@pytest.fixture(autouse=True)
def one_thread():
    """The goldens were recorded single-threaded (the reduction order depends on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _generate(model, backend, **kwargs):
    return on_device(pydecode.generate, model_on_device(model), backend=backend, **kwargs)


@pytest.mark.parametrize("case_id", GOLDEN_IDS)
def test_goldens(backend, case_id):
    case = GOLDEN[case_id]
    kwargs = dict(**case_tensors(case), **case["generate_kwargs"])
    model = _golden_model(case["model"])
    expected = case["sequences"] if DEVICE == "cpu" else _generate(model, "torch", **kwargs).sequences.tolist()
    assert _generate(model, backend, **kwargs).sequences.tolist() == expected


def test_beam_search_matches_transformers(backend):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(num_beams=4, num_return_sequences=2, length_penalty=1.3, max_new_tokens=10, eos_token_id=[5, 77],
                  repetition_penalty=1.1, no_repeat_ngram_size=3, return_dict_in_generate=True, output_scores=True)
    want = on_device(model_on_device(model).generate, ids, attention_mask=mask, do_sample=False, **kwargs)
    got = _generate(model, backend, input_ids=ids, attention_mask=mask, **kwargs)
    assert torch.equal(got.sequences, want.sequences)
    torch.testing.assert_close(got.sequences_scores, want.sequences_scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extra", [
    dict(top_k=20, top_p=0.9, min_p=0.05, temperature=0.8, repetition_penalty=1.2, frequency_penalty=0.3,
         presence_penalty=0.2),
    dict(num_beams=3, top_k=30, temperature=1.3),
    dict(assistant_model="noisy-llama", num_assistant_tokens=3, top_p=0.95),
], ids=["filters-and-penalties", "beam-sampling", "speculative"])
def test_seeded_sampling_matches_the_reference_backend(kernel_backend, extra):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    if "assistant_model" in extra:
        extra = {**extra, "assistant_model": model_on_device(_noisy_draft())}
    kwargs = dict(input_ids=ids, attention_mask=mask, do_sample=True, seed=torch.tensor([3, 1, 4]),
                  max_new_tokens=10, **extra)
    assert torch.equal(_generate(model, kernel_backend, **kwargs), _generate(model, "torch", **kwargs))
