"""Properties of the fused sampler on every backend, against the reference (pydecode.ops.sample.reference).

For any logits (NaN, +-inf, all masked, all equal, huge or tiny, ties at the top-k / top-p boundary) and any valid
per-row parameters: every id lies in ``[0, V)`` and in the set the reference allows (its kept set; the argmax on a
greedy row; token 0 on a row with no finite logit), and equals the reference's id for the same seeds and step, but at a
near-tie of the noisy values (relative difference <= 1e-4: log / exp / softmax round differently per backend). The
fused logprobs come with the plain draw's ids, within 1e-4 (plus a few float32 ulps of the row's largest logit) of a
float64 log-softmax. The Triton interpreter runs ~0.1 s per row: it gets small shapes.
"""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pydecode.ops import top_k_top_p_sample
from pydecode.ops.reference import gumbel_noise, process_logits
from pydecode.ops.reference import top_k_top_p_sample as reference_sample
from pydecode.ops.sample.reference import apply_temperature, per_row, sanitize

from tests.properties.strategies import examples, logits_batches, sampling_params, seeds_for
from tests.support.devices import on_device


def allowed_set(logits, params):
    """(B, V) bool: the tokens the reference may draw."""
    processed = process_logits(logits, **params)
    greedy = per_row(params["temperature"], logits.shape[0], logits.device, torch.float32) <= 0
    argmax = torch.zeros_like(processed, dtype=torch.bool).scatter_(1, processed.argmax(-1, keepdim=True), True)
    empty = ~torch.isfinite(processed).any(-1, keepdim=True) & ~(processed == float("inf")).any(-1, keepdim=True)
    first = torch.arange(logits.shape[1]) == 0
    return torch.where(greedy, argmax, (processed > float("-inf")) | (empty & first))


def assert_same_draw(tokens, logits, seeds, step, params):
    batch, vocab = logits.shape
    assert tokens.dtype == torch.int64 and tokens.shape == (batch,)
    assert bool(((tokens >= 0) & (tokens < vocab)).all()), f"ids out of [0, {vocab}): {tokens.tolist()}"
    allowed = allowed_set(logits, params)
    assert bool(allowed.gather(1, tokens.view(-1, 1)).all()), "a draw lies outside the reference's allowed set"
    expected = reference_sample(logits, seeds=seeds, step=step, **params)
    tempered = apply_temperature(sanitize(logits), params["temperature"])
    noisy = torch.where(allowed, tempered + gumbel_noise(seeds, step, vocab), float("-inf"))
    ours, theirs = noisy.gather(1, tokens.view(-1, 1)), noisy.gather(1, expected.view(-1, 1))
    near_tie = (ours - theirs).abs() <= 1e-4 * theirs.abs().clamp(min=1.0)
    differ = (tokens != expected).view(-1, 1) & ~near_tie
    assert not bool(differ.any()), f"draws differ from the reference: {tokens.tolist()} vs {expected.tolist()}"


def float_error(logits):
    """(B,) float64: a few float32 ulps of the row's largest finite magnitude: ``x - log_z`` in float32 loses that much
    when the logits are large (log_z = max + log(sum), rounded at max's scale); far below an fp16 logit's own ulp."""
    finite = torch.where(torch.isfinite(logits), logits.double().abs(), 0.0)
    return 4 * torch.finfo(torch.float32).eps * finite.amax(-1) if logits.shape[1] else finite.sum(-1)


def draw_case(data, backend):
    small = backend == "triton"
    logits = data.draw(logits_batches(max_batch=4 if small else 64, max_vocab=3000 if small else 300_000),
                       label="logits")
    batch, vocab = logits.shape
    params = data.draw(sampling_params(batch, vocab), label="params")
    seeds = seeds_for(data.draw, batch)
    step = data.draw(st.integers(0, 2**31 - 1), label="step")
    return logits, params, seeds, step


@settings(max_examples=examples(1.0))
@given(data=st.data())
def test_draws_are_valid_and_equal_the_reference(backend, data):
    logits, params, seeds, step = draw_case(data, backend)
    tokens = on_device(top_k_top_p_sample, logits, seeds=seeds, step=step, backend=backend, **params)
    assert_same_draw(tokens, logits, seeds, step, params)


@settings(max_examples=examples(0.5))
@given(data=st.data())
def test_fused_logprobs_draw_the_same_ids(backend, data):
    logits, params, seeds, step = draw_case(data, backend)
    tokens, logprob, processed = on_device(top_k_top_p_sample, logits, seeds=seeds, step=step, backend=backend,
                                           return_logprobs=True, **params)
    assert torch.equal(tokens, on_device(top_k_top_p_sample, logits, seeds=seeds, step=step, backend=backend,
                                         **params))
    assert logprob.shape == processed.shape == (logits.shape[0],)
    finite_row = torch.isfinite(sanitize(logits)).any(-1) & ~(sanitize(logits) == float("inf")).any(-1)
    raw = sanitize(logits).double().log_softmax(-1).gather(1, tokens.view(-1, 1))[:, 0]
    error = (logprob.double() - raw)[finite_row].abs()
    assert bool((error <= 1e-4 + 1e-5 * raw[finite_row].abs() + float_error(logits)[finite_row]).all()), error.max()
    assert bool(torch.isnan(logprob[~finite_row]).all())
    # NaN where logit / T overflows (nothing finite left to normalise over)
    processed = processed[finite_row]
    assert bool(((processed <= 1e-4) | processed.isnan()).all()), "a processed logprob above 0"
