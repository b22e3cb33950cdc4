"""pydecode.Sampler step by step: dynamic temperature against llama.cpp's definition, draft rows, logprobs,
process(), stop state, backends, and the argument checks."""
import math

import pytest
import torch

import pydecode
from pydecode import Sampler, SamplingParams
from pydecode.ops.sample.dynatemp import dynamic_temperature
from pydecode.ops.sample.reference import process_logits, sample_from_processed

from tests.generation.models import padded_batch, tiny_model

V = 300


def llama_cpp_dynatemp(logits, temp, delta, exponent):
    """llama.cpp's ``llama_sampler_temp_ext_apply`` on one row, over its finite candidates, in float64: the
    dynamic temperature it divides the logits by (the base temperature when there is nothing to scale)."""
    candidates = [float(x) for x in logits if math.isfinite(float(x))]
    if delta <= 0 or len(candidates) <= 1:
        return temp
    min_temp, max_temp = max(0.0, temp - delta), temp + delta
    max_entropy = -math.log(1.0 / len(candidates))
    top = max(candidates)
    weights = [math.exp(x - top) for x in candidates]
    total = sum(weights)
    entropy = -sum(w / total * math.log(w / total) for w in weights if w > 0)
    return min_temp + (max_temp - min_temp) * (entropy / max_entropy) ** exponent


@pytest.mark.parametrize("temp,delta,exponent", [(1.0, 0.5, 1.0), (0.7, 0.7, 2.0), (0.3, 1.0, 0.5), (1.5, 0.2, 1.0)])
def test_dynamic_temperature_matches_llama_cpp(temp, delta, exponent):
    g = torch.Generator().manual_seed(int(temp * 10 + delta * 100))
    logits = torch.randn(16, V, generator=g) * torch.linspace(0.1, 8.0, 16)[:, None]  # flat to peaked rows
    logits[3, 50:] = float("-inf")  # fewer candidates
    logits[4, 1:] = float("-inf")  # one candidate: nothing to scale
    got = dynamic_temperature(logits, temp, delta, exponent)
    want = torch.tensor([llama_cpp_dynatemp(row.tolist(), temp, delta, exponent) for row in logits])
    torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-5)
    assert got.min() >= max(0.0, temp - delta) - 1e-6 and got.max() <= temp + delta + 1e-6
    assert float(got[0]) > float(got[-1])  # the flat row runs hotter than the peaked one


def test_dynamic_temperature_range_zero_is_plain_temperature():
    logits = torch.randn(8, V, generator=torch.Generator().manual_seed(0)) * 3
    assert torch.equal(dynamic_temperature(logits, 0.8, 0.0, 1.0), torch.full((8,), 0.8))
    plain, dyn = Sampler(8, V, "cpu"), Sampler(8, V, "cpu")
    for slot in range(8):
        plain.add_request(slot, SamplingParams(temperature=0.8, seed=slot, top_k=50), [1])
        dyn.add_request(slot, SamplingParams(temperature=0.8, seed=slot, top_k=50, dynatemp_range=0.0), [1])
    assert torch.equal(plain.sample(logits, list(range(8))).token_ids, dyn.sample(logits, list(range(8))).token_ids)


def test_dynamic_temperature_in_the_sampler_and_generate():
    """With a range, the draw is the one from the logits divided by llama.cpp's temperature; generate() agrees."""
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(1)) * torch.linspace(0.5, 6, 6)[:, None]
    sampler = Sampler(6, V, "cpu", backend="torch")
    for slot in range(6):
        sampler.add_request(slot, SamplingParams(temperature=1.0, dynatemp_range=0.9, seed=slot), [1])
    got = sampler.sample(logits, list(range(6))).token_ids
    temps = torch.tensor([llama_cpp_dynatemp(row.tolist(), 1.0, 0.9, 1.0) for row in logits]).float()
    want = torch.stack([sample_from_processed(logits[i:i + 1] / temps[i], torch.tensor([i]), 0)[0]
                        for i in range(6)])
    assert torch.equal(got, want)
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=True, temperature=0.2, seed=4)
    plain = pydecode.generate(model, ids, **kwargs)
    assert torch.equal(plain, pydecode.generate(model, ids, dynatemp_range=0.0, **kwargs))
    assert not torch.equal(plain, pydecode.generate(model, ids, dynatemp_range=5.0, **kwargs))


def test_draft_rows_draw_at_their_positions():
    """A slot repeated over rows (draft tokens) draws row j from the stream at position generated + j."""
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(2))
    sampler = Sampler(2, V, "cpu")
    sampler.add_request(1, SamplingParams(temperature=1.0, seed=99), [1, 2])
    drafts = sampler.sample(logits, [1, 1, 1, 1], positions=torch.arange(4)).token_ids
    for j in range(4):
        assert int(drafts[j]) == int(sample_from_processed(logits[j:j + 1], torch.tensor([99]), j)[0])
    sampler.append([1, 1], drafts[:2])  # two accepted: the next default position is 2
    assert int(sampler.sample(logits[2:3], [1]).token_ids) == int(drafts[2])


def test_logprobs_and_top_alternatives():
    logits = torch.randn(3, V + 20, generator=torch.Generator().manual_seed(3))  # a padded LM head
    sampler = Sampler(3, V, "cpu")
    for slot in range(3):
        sampler.add_request(slot, SamplingParams(temperature=1.0, seed=slot), [1])
    assert sampler.sample(logits, [0, 1, 2]).logprobs is None
    only = sampler.sample(logits, [2, 0, 1], num_logprobs=0)
    assert only.top_ids is None and (only.token_ids < V).all()
    out = sampler.sample(logits, [2, 0, 1], num_logprobs=5)
    reference = logits[:, :V].log_softmax(-1)
    torch.testing.assert_close(out.logprobs, reference.gather(1, out.token_ids[:, None])[:, 0])
    torch.testing.assert_close(out.top_logprobs, reference.topk(5).values)
    assert torch.equal(out.top_ids, reference.topk(5).indices)


def test_process_applies_the_pipeline_in_place():
    logits = torch.randn(2, V + 4, generator=torch.Generator().manual_seed(4))
    sampler = Sampler(2, V, "cpu")
    sampler.add_request(0, SamplingParams(temperature=0.5, top_k=10, presence_penalty=1.0), [1])
    sampler.add_request(1, SamplingParams(temperature=0.0, suppress_tokens=[7]), [1])
    sampler.append([0], torch.tensor([int(logits[0, :V].argmax())]))
    raw = logits.clone()
    out = sampler.process(logits, [0, 1])
    assert out is logits and torch.isinf(logits[:, V:]).all()
    penalised = raw[0, :V].clone()
    penalised[int(raw[0, :V].argmax())] -= 1.0
    assert torch.equal(logits[0, :V], process_logits(penalised[None], 0.5, 10)[0])
    want = raw[1, :V].clone()
    want[7] = float("-inf")
    assert torch.equal(logits[1, :V], want)  # greedy: bans only, no warpers


def test_history_bans_bind_only_the_requests_that_set_them():
    """A multi-token bad word and an n-gram size bind their own slot, not a neighbour whose history is the same."""
    sampler = Sampler(3, V, "cpu")
    sampler.add_request(0, SamplingParams(temperature=0.0, max_tokens=4, bad_words_ids=[[5, 6]]), [1, 5])
    sampler.add_request(1, SamplingParams(temperature=0.0, max_tokens=4, no_repeat_ngram_size=2), [5, 6, 5])
    sampler.add_request(2, SamplingParams(temperature=0.0, max_tokens=4), [5, 6, 5])
    logits = torch.zeros(3, V)
    logits[:, 6] = 1.0
    logits = sampler.process(logits, [2, 1, 0])
    assert torch.isinf(logits[1:, 6]).all() and logits[0, 6] == 1.0
    assert not torch.isinf(logits[:, :6]).any()


def test_append_reports_finished_slots():
    sampler = Sampler(3, V, "cpu", eos_token_id=5)
    sampler.add_request(0, SamplingParams(max_tokens=2), [1])
    sampler.add_request(1, SamplingParams(eos_token_id=[9, 10]), [1])
    sampler.add_request(2, SamplingParams(), [1])
    assert sampler.append([0, 1, 2], torch.tensor([4, 10, 9])).tolist() == [False, True, False]
    assert sampler.append([0, 2, 2], torch.tensor([4, 3, 5])).tolist() == [True, False, True]


@pytest.mark.parametrize("backend", ["cpp", "triton"])
def test_backends_draw_the_same_tokens(backend):
    from pydecode.ops.backends import active_backends

    if backend not in active_backends("cpu"):
        pytest.skip(f"{backend} is not usable here")
    logits = torch.randn(5, V, generator=torch.Generator().manual_seed(5)) * 2
    tokens = {}
    for name in ("torch", backend):
        sampler = Sampler(5, V, "cpu", backend=name)
        for slot in range(5):
            sampler.add_request(slot, SamplingParams(temperature=0.9, top_k=slot * 20, top_p=0.8 + slot * 0.05,
                                                     min_p=0.01 * slot, seed=slot), [1])
        tokens[name] = sampler.sample(logits, [4, 2, 0, 1, 3], positions=torch.tensor([0, 3, 9, 1, 2])).token_ids
    assert torch.equal(tokens["torch"], tokens[backend])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="max_slots"):
        Sampler(0, V, "cpu")
    with pytest.raises(ValueError, match="vocab_size"):
        Sampler(2, -1, "cpu")
    with pytest.raises(ValueError, match="sync"):
        Sampler(2, V, "cpu", sync="allreduce")
    with pytest.raises(ValueError, match="backend"):
        Sampler(2, V, "cpu", backend="fastest")
    sampler = Sampler(2, V, "cpu")
    with pytest.raises(ValueError, match="slot"):
        sampler.add_request(2, SamplingParams(), [1])
    with pytest.raises(TypeError, match="params"):
        sampler.add_request(0, {"temperature": 1.0}, [1])
    with pytest.raises(ValueError, match="prompt_ids"):
        sampler.add_request(0, SamplingParams(), [V])
    with pytest.raises(ValueError, match="suppress_tokens"):
        sampler.add_request(0, SamplingParams(suppress_tokens=[V + 1]), [1])
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampler.add_request(0, SamplingParams(no_repeat_ngram_size=2), [1])
    with pytest.raises(NotImplementedError, match="sequence_bias"):
        sampler.add_request(0, SamplingParams(sequence_bias=[[[1, 2], 1.0]]), [1])
    sampler.add_request(0, SamplingParams(), [1])
    with pytest.raises(ValueError, match="slots"):
        sampler.sample(torch.zeros(2, V), [0])
    with pytest.raises(ValueError, match="vocab_size"):
        sampler.sample(torch.zeros(1, V - 1), [0])
    with pytest.raises(ValueError, match="positions"):
        sampler.sample(torch.zeros(1, V), [0], positions=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_logprobs"):
        sampler.sample(torch.zeros(1, V), [0], num_logprobs=-1)
    with pytest.raises(TypeError, match="float32"):
        sampler.process(torch.zeros(1, V, dtype=torch.float16), [0])
    with pytest.raises(ValueError, match="token_ids"):
        sampler.append([0], torch.tensor([1, 2]))
