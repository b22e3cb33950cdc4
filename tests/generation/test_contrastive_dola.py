"""Contrastive search and DoLa: token for token against transformers 4.55.4 goldens, reductions to greedy, bad input."""
import functools
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

import pydecode
from pydecode.generation.model.runner import ModelRunner
from pydecode.generation.prepare import prepare
from pydecode.generation.strategies import contrastive
from pydecode.generation.strategies.dola import SMALLEST_NORMAL_LOG, candidate_layers, contrast_layers

from tests.fixtures.golden_v4 import case_ids, case_tensors, golden_file, load_golden, model_path

CONTRASTIVE = load_golden("contrastive")
DOLA = load_golden("dola")
SMOLLM2 = [c for c in (load_golden("smollm2") if golden_file("smollm2").is_file() else [])
           if c["strategy"] in ("contrastive_search", "dola")]


@functools.lru_cache(maxsize=None)
def _model(name: str, attn: str = "eager"):
    return AutoModelForCausalLM.from_pretrained(model_path(name), attn_implementation=attn,
                                                dtype=torch.float32).eval()


@pytest.fixture(autouse=True)
def one_thread():
    """The goldens were recorded single-threaded (reduction order depends on the thread count); tiny models also
    run fastest on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _assert_golden(case, **extra):
    out = pydecode.generate(_model(case["model"]), **case_tensors(case), **case["generate_kwargs"], **extra)
    assert out.sequences.tolist() == case["sequences"], case["id"]
    return out


@pytest.mark.parametrize("case", CONTRASTIVE, ids=case_ids(CONTRASTIVE))
def test_contrastive_matches_golden(case):
    out = _assert_golden(case)
    assert len(out.scores) == len(case["sequences"][0]) - len(case["input_ids"][0])
    top = torch.stack(out.scores, 1).topk(case["scores_topk"]["k"], dim=-1).values
    want = torch.tensor(case["scores_topk"]["values"]).transpose(0, 1)
    if case["generate_kwargs"].get("repetition_penalty", 1.0) != 1.0:
        # transformers 4.55 also penalises the pad token of left padding; 5.x (and pydecode) ignore the padding
        unpadded = torch.tensor(case["attention_mask"]).bool().all(dim=1)
        top, want = top[unpadded], want[unpadded]
    torch.testing.assert_close(top, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", DOLA, ids=case_ids(DOLA))
def test_dola_matches_golden(case):
    _assert_golden(case)


@pytest.mark.real_model
@pytest.mark.parametrize("case", SMOLLM2, ids=case_ids(SMOLLM2))
def test_smollm2_matches_golden(case, smollm2_converted):
    _assert_golden(case)


@pytest.mark.parametrize("case_id", ["tiny-llama/contrastive/a0.5_k8/padded/eos",
                                     "tiny-gpt2/contrastive/a0.6_k4/padded"])
def test_repeated_cache_path_matches_golden(case_id, monkeypatch):
    """Caches that cannot take the candidates in the query dimension are repeated K times (transformers' way)."""
    monkeypatch.setattr(ModelRunner, "_candidates_in_query", lambda self: False)
    _assert_golden(next(c for c in CONTRASTIVE if c["id"] == case_id))


def _padded_case():
    return next(c for c in CONTRASTIVE if c["id"] == "tiny-llama/contrastive/a0.6_k4/padded/eos")


@pytest.mark.parametrize("override", [{"penalty_alpha": 0.0}, {"top_k": 1}])
def test_contrastive_loop_reduces_to_greedy(override):
    """The contrastive loop itself (not the strategy switch) gives greedy's tokens with alpha = 0 or top_k = 1."""
    case = _padded_case()
    model, inputs = _model(case["model"]), case_tensors(case)
    kwargs = dict(case["generate_kwargs"], return_dict_in_generate=False)
    greedy = pydecode.generate(model, **inputs, **{**kwargs, "penalty_alpha": None})
    ctx = prepare(model, inputs["input_ids"], inputs["attention_mask"], None, None, None, None, None, dict(kwargs))
    assert ctx.strategy == "contrastive"
    for name, value in override.items():
        setattr(ctx.config, name, value)
    assert torch.equal(contrastive.run(ctx), greedy)
    assert torch.equal(pydecode.generate(model, **inputs, **{**kwargs, **override}), greedy)


def test_return_dict_streamer_and_cache():
    case = _padded_case()
    model, inputs = _model(case["model"]), case_tensors(case)
    seen = []

    class Streamer:
        def put(self, value):
            seen.append(value)

        def end(self):
            seen.append(None)

    kwargs = dict(case["generate_kwargs"], output_logits=True, output_hidden_states=True, output_logprobs=True)
    out = pydecode.generate(model, **inputs, streamer=Streamer(), **kwargs)
    steps = out.sequences.shape[1] - inputs["input_ids"].shape[1]
    assert len(out.logits) == len(out.hidden_states) == steps
    assert out.hidden_states[1][-1].shape == (3, 1, model.config.hidden_size)
    assert out.past_key_values.get_seq_length() == out.sequences.shape[1] - 1
    assert out.logprobs.shape == (3, steps)
    assert torch.equal(torch.cat(seen[1:-1]).view(steps, 3).T, out.sequences[:, -steps:]) and seen[-1] is None


def test_dola_with_sampling_is_seeded():
    case = DOLA[1]
    model, inputs = _model(case["model"]), case_tensors(case)
    kwargs = dict(case["generate_kwargs"], do_sample=True, seed=7, return_dict_in_generate=False)
    first = pydecode.generate(model, **inputs, **kwargs)
    assert torch.equal(first, pydecode.generate(model, **inputs, **kwargs))


def test_dola_candidate_layers():
    assert candidate_layers("low", 32, False) == list(range(0, 16, 2))
    assert candidate_layers("high", 32, False) == list(range(16, 32, 2))
    assert candidate_layers("low", 48, False) == list(range(0, 20, 2))
    assert candidate_layers("high", 48, True) == list(range(28, 48, 2))
    assert candidate_layers("low", 48, True) == list(range(2, 20, 2))  # tied: the embedding layer is skipped
    assert candidate_layers("low", 4, True) == [2]
    assert candidate_layers("low", 2, True) == [1]
    assert candidate_layers([0, 5], 6, True) == [0, 5]


def _contrast_as_written(final, premature):
    """DoLa's layer contrast transcribed from the paper's formulas, every probability exact."""
    log_final, log_premature = final.log_softmax(-1), premature.log_softmax(-1)
    middle = 0.5 * (log_final.exp()[None] + log_premature.exp())
    js = 0.5 * (torch.nn.functional.kl_div(log_final[None], middle, reduction="none").mean(-1)
                + torch.nn.functional.kl_div(log_premature, middle, reduction="none").mean(-1))
    log_base = premature[js.mean(-1).argmax()].log_softmax(-1)
    implausible = log_final < log_final.amax(-1, keepdim=True) + math.log(0.1)
    return log_final.masked_fill(implausible, float("-inf")) - log_base.masked_fill(implausible, -1e-3)


@pytest.mark.parametrize("seed", range(5))
def test_layer_contrast_is_unchanged_by_raising_subnormal_probabilities(seed):
    g = torch.Generator().manual_seed(seed)
    final = torch.randn(2, 3000, generator=g) * 6
    spread = torch.tensor([4.0, 30.0, 45.0, 60.0])[torch.randperm(4, generator=g)].view(4, 1, 1)
    premature = torch.randn(4, 2, 3000, generator=g) * spread  # most log-probs of the wide layers lie below -87
    assert (premature.log_softmax(-1) < SMALLEST_NORMAL_LOG).float().mean() > 0.3
    assert torch.equal(contrast_layers(final, premature), _contrast_as_written(final, premature))


@pytest.mark.parametrize("kwargs,match", [
    ({"penalty_alpha": 1.5, "top_k": 4}, "penalty_alpha"),
    ({"dola_layers": [6]}, "dola_layers"),
    ({"dola_layers": [-1, 2]}, "dola_layers"),
    ({"dola_layers": "middle"}, "dola_layers"),
    ({"dola_layers": []}, "dola_layers"),
    ({"dola_layers": "low", "num_beams": 2}, "num_beams"),
])
def test_bad_input_raises(kwargs, match):
    case = CONTRASTIVE[0]
    with pytest.raises(ValueError, match=match):
        pydecode.generate(_model(case["model"]), **case_tensors(case), max_new_tokens=2, **kwargs)


@pytest.mark.parametrize("fields,match", [
    ({"penalty_alpha": -0.1, "top_k": 4}, "penalty_alpha"),
    ({"penalty_alpha": float("nan"), "top_k": 4}, "penalty_alpha"),
    ({"penalty_alpha": 0.6, "top_k": 0}, "top_k"),
])
def test_check_contrastive_args(fields, match):
    """Values that make transformers fall back to greedy silently (checked where generate() calls the helper)."""
    config = pydecode.GenerationConfig(**fields)
    with pytest.raises(ValueError, match=match):
        contrastive.check_contrastive_args(config)


@pytest.mark.parametrize("strategy", [dict(penalty_alpha=0.6, top_k=4), dict(dola_layers="high")],
                         ids=["contrastive", "dola"])
def test_logprobs_are_zero_after_a_row_finished(strategy):
    """Once a row has emitted eos its logprobs are 0 (as in sampling), not the logprob of the pad token."""
    from tests.generation.models import padded_batch, tiny_model

    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(attention_mask=mask, max_new_tokens=8, pad_token_id=0, return_dict_in_generate=True,
                  output_logprobs=True, **strategy)
    free = pydecode.generate(model, ids, **kwargs).sequences[:, ids.shape[1]:]
    eos = int(free[0, 2])  # row 0 stops at step 2 at the latest
    out = pydecode.generate(model, ids, eos_token_id=eos, **kwargs)
    new = out.sequences[:, ids.shape[1]:]
    after = (new == eos).long().cumsum(1).roll(1, 1)
    after[:, 0] = 0
    assert bool((after > 0).any())
    assert bool((out.logprobs[after > 0] == 0).all()) and bool((out.processed_logprobs[after > 0] == 0).all())
    assert bool((out.logprobs[after == 0] < 0).all())
