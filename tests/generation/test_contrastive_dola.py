"""Contrastive search and DoLa: token for token against transformers 4.55.4 goldens, reductions to greedy, bad input."""
import functools
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import pydecode
from pydecode.generation import contrastive
from pydecode.generation.api import prepare
from pydecode.generation.dola import candidate_layers
from pydecode.generation.runner import ModelRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from golden_v4 import case_ids, case_tensors, golden_file, load_golden, model_path  # noqa: E402

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
def test_smollm2_matches_golden(case):
    _assert_golden(case)


@pytest.mark.parametrize("case_id", ["tiny-llama/contrastive/a0.5_k8/padded/eos", "tiny-gpt2/contrastive/a0.6_k4/padded"])
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
