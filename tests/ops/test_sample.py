"""The fused sampler on every backend against the reference (pydecode.ops.sample.reference).

Deterministic: the draw equals the reference's draw for the same seeds and step, except at a near-tie of the noisy
values (|difference| <= 1e-4, float rounding of log/exp/softmax differs between backends). Exact ties follow the one
tie rule of the reference's docstring (a cut keeps or drops a group of equal values whole) on every backend.
Statistical: every draw lies in the allowed set; frequencies over many rows with identical logits and distinct seeds
pass a chi-square test at the 0.1% level (fixed seeds: the outcome is deterministic, it cannot flake).
"""
import pytest
import torch
from scipy.stats import chisquare

from pydecode.ops import top_k_top_p_sample
from pydecode.ops.reference import gumbel_noise, process_logits
from pydecode.ops.reference import top_k_top_p_sample as reference_sample
from pydecode.ops.sample.reference import apply_temperature, per_row, sanitize

from tests.support.devices import on_device

FILTERS = dict(temperature=0.8, top_k=50, top_p=0.9, min_p=0.05)


def make_logits(batch, vocab, dtype=torch.float32, seed=0, scale=4.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, vocab, generator=gen) * scale).to(dtype)


def make_seeds(batch, offset=0):
    return torch.arange(batch, dtype=torch.int64) * 1_000_003 + 12345 + offset


def allowed_set(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """(B, V) bool: the reference's kept set, widened by ties at its smallest kept value (top-p boundary ties)."""
    processed = process_logits(logits, temperature, top_k, top_p, min_p)
    tempered = apply_temperature(sanitize(logits), temperature)
    lowest = torch.where(processed > float("-inf"), tempered, float("inf")).amin(dim=-1, keepdim=True)
    greedy = per_row(temperature, logits.shape[0], logits.device, torch.float32) <= 0
    argmax = torch.zeros_like(processed, dtype=torch.bool).scatter_(1, processed.argmax(-1, keepdim=True), True)
    empty = torch.isinf(lowest) & (torch.arange(logits.shape[1]) == 0)  # no finite logit: token 0
    return torch.where(greedy, argmax, (tempered >= lowest) | empty)


def assert_reference_draw(tokens, logits, seeds, step, **params):
    """Every token is allowed and equals the reference's draw, but for documented near-ties."""
    params = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) | params
    expected = reference_sample(logits, seeds=seeds, step=step, **params)
    batch = logits.shape[0]
    assert tokens.dtype == torch.int64 and tokens.shape == (batch,)
    assert bool(((tokens >= 0) & (tokens < logits.shape[1])).all())
    allowed = allowed_set(logits, **params)
    assert bool(allowed.gather(1, tokens.view(-1, 1)).all()), "a draw lies outside the allowed set"
    tempered = apply_temperature(sanitize(logits), params["temperature"])
    noisy = torch.where(allowed, tempered + gumbel_noise(seeds, step, logits.shape[1]), float("-inf"))
    ours, theirs = noisy.gather(1, tokens.view(-1, 1)), noisy.gather(1, expected.view(-1, 1))
    near_tie = (ours - theirs).abs() <= 1e-4 * theirs.abs().clamp(min=1.0)
    differ = tokens.view(-1, 1) != expected.view(-1, 1)
    assert not bool((differ & ~near_tie).any()), f"draws differ: {tokens.tolist()} vs {expected.tolist()}"


def sample(logits, backend, seeds, step=0, **params):
    return on_device(top_k_top_p_sample, logits, seeds=seeds, step=step, backend=backend, **params)


def expected_logprobs(logits, tokens, **params):
    """The drawn tokens' raw logprobs, and their processed logprobs under the reference's kept set and under the
    kernels' kept set (which keeps a top-p tie group at the pivot whole)."""
    params = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) | params
    at = tokens.view(-1, 1)
    raw = sanitize(logits).double().log_softmax(-1).gather(1, at)[:, 0].float()
    reference_kept = process_logits(logits, **params).double().log_softmax(-1).gather(1, at)[:, 0].float()
    tempered = apply_temperature(sanitize(logits), params["temperature"]).double()
    whole_ties = torch.where(allowed_set(logits, **params), tempered, float("-inf")).log_softmax(-1).float()
    greedy = per_row(params["temperature"], logits.shape[0], logits.device, torch.float32)[:, 0] <= 0
    return raw, reference_kept, torch.where(greedy, raw, whole_ties.gather(1, at)[:, 0])


def assert_logprobs(logits, backend, seeds, step, **params):
    """The fused draw equals the plain draw; its logprobs match a float64 log-softmax within 1e-4 (the float32
    reference's own error reaches 6e-5 at vocab 262144)."""
    tokens, logprob, processed = sample(logits, backend, seeds, step, return_logprobs=True, **params)
    assert torch.equal(tokens, sample(logits, backend, seeds, step, **params))
    assert logprob.dtype == processed.dtype == torch.float32 and logprob.shape == processed.shape == tokens.shape
    raw, reference_kept, whole_ties = expected_logprobs(logits, tokens, **params)
    torch.testing.assert_close(logprob, raw, rtol=1e-5, atol=1e-4, equal_nan=True)
    close = [torch.isclose(processed, x, rtol=1e-5, atol=1e-4, equal_nan=True) for x in (reference_kept, whole_ties)]
    assert bool((close[0] | close[1]).all()), f"processed logprobs differ: {processed} vs {reference_kept}"
    return tokens, logprob, processed


SHAPES = [(1000, 37), (49152, 7), (262144, 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("vocab,batch", SHAPES)
def test_draw_matches_reference(kernel_backend, vocab, batch, dtype):
    cases = (FILTERS, dict(temperature=1.0), dict(temperature=0.7, top_p=0.8), dict(temperature=1.2, min_p=0.1))
    if kernel_backend == "triton":  # the interpreter costs ~0.1 s per row: big vocabularies on float32 only, fewer rows
        if vocab > 1000 and dtype != torch.float32:
            pytest.skip("the Triton interpreter is slow: big vocabularies run on float32 only")
        batch, cases = min(batch, 5), cases[:2]
    logits = make_logits(batch, vocab, dtype, seed=vocab + batch)
    seeds = make_seeds(batch)
    for params in cases:
        tokens = sample(logits, kernel_backend, seeds, step=3, **params)
        assert_reference_draw(tokens, logits, seeds, 3, **params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("vocab,batch", SHAPES)
def test_fused_logprobs_match_reference(kernel_backend, vocab, batch, dtype):
    cases = (FILTERS, dict(temperature=0.0), dict(temperature=0.7, top_p=0.8), dict(temperature=1.2, min_p=0.1),
             dict(temperature=torch.where(torch.arange(batch) % 2 == 0, 0.0, 0.9), top_k=40))
    if kernel_backend == "triton":  # the interpreter is slow (top-p's mass histograms most): big vocabularies on 1 row
        if vocab > 1000 and dtype != torch.float32:
            pytest.skip("the Triton interpreter is slow: big vocabularies run on float32 only")
        batch, cases = (min(batch, 5), cases) if vocab == 1000 else (1, cases[:2])
    logits = make_logits(batch, vocab, dtype, seed=vocab + batch + 1)
    seeds = make_seeds(batch)
    for params in cases:
        params = {k: v[:batch] if isinstance(v, torch.Tensor) else v for k, v in params.items()}
        tokens, _, processed = assert_logprobs(logits, kernel_backend, seeds, 7, **params)
        assert_reference_draw(tokens, logits, seeds, 7, **params)
        assert bool((processed <= 1e-6).all())


def test_fused_logprobs_edge_rows(backend):
    logits = make_logits(6, 1000, seed=12)
    logits[0] = float("nan")     # nothing finite: NaN logprobs, as log_softmax gives
    logits[1] = float("-inf")
    logits[2, 17] = float("inf")  # a +inf logit: NaN as well
    logits[3, ::2] = float("nan")
    seeds = make_seeds(6)
    temperature = torch.tensor([1.0, 0.0, 0.8, 0.8, 0.0, 1.0])
    tokens, logprob, processed = assert_logprobs(logits, backend, seeds, 1, temperature=temperature, top_k=5,
                                                 top_p=0.6)
    assert bool(torch.isnan(logprob[:3]).all()) and bool(torch.isnan(processed[:3]).all())
    assert bool(torch.isfinite(logprob[3:]).all()) and bool(torch.isfinite(processed[3:]).all())
    # top_k=1 leaves one token: its processed logprob is exactly log(1)
    _, _, single = assert_logprobs(logits[3:], backend, seeds[3:], 1, temperature=0.9, top_k=1)
    assert torch.equal(single, torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_fused_logprobs_skip_a_nan_logit_in_a_greedy_row(backend, dtype):
    """A NaN logit counts as -inf in the logprob's normalizer too, for 16-bit rows as well (the Triton kernel let a
    bfloat16 NaN into its log-sum-exp; found by the long property run)."""
    logits = make_logits(2, 31, seed=3).to(dtype)
    logits[:, 30] = float("nan")
    assert_logprobs(logits, backend, make_seeds(2), 0, temperature=torch.tensor([0.0, 0.7]))


@pytest.mark.parametrize("params", [FILTERS, dict(temperature=1.5), dict(temperature=0.9, top_k=7, top_p=0.85)],
                         ids=["all-filters", "temperature-only", "top-k-top-p"])
def test_frequencies_match_reference_distribution(backend, params):
    if backend == "triton" and params is not FILTERS:
        pytest.skip("the Triton interpreter is slow: one statistical case")
    assert_frequencies(make_logits(1, 1000, seed=7, scale=2.0), backend, 150 if backend == "triton" else 4000, params)


@pytest.mark.parametrize("params", [dict(temperature=1.0, top_k=7), dict(temperature=1.0, top_p=0.6),
                                    dict(temperature=0.8, top_k=40, top_p=0.5, min_p=0.1)],
                         ids=["top-k", "top-p", "all-filters"])
def test_frequencies_on_tied_rows(backend, params):
    """bfloat16 logits rounded to halves: top-k and top-p cut through groups of equal values."""
    if backend == "triton" and "top_p" in params:
        pytest.skip("the Triton interpreter is slow: one statistical case")
    logits = (make_logits(1, 200, seed=21, scale=2.0) * 2).round().div(2).to(torch.bfloat16)
    assert_frequencies(logits, backend, 150 if backend == "triton" else 3000, params)


def assert_frequencies(logits, backend, rows, params):
    """Draws from ``rows`` copies of the row ``logits`` (1, V) pass a chi-square test against the reference."""
    vocab = logits.shape[1]
    tokens = sample(logits.expand(rows, vocab).contiguous(), backend, make_seeds(rows, offset=99), step=1, **params)
    probs = process_logits(logits, **params).softmax(dim=-1)[0].double()
    assert bool((probs[tokens] > 0).all()), "a draw has zero probability under the reference"
    observed = torch.bincount(tokens, minlength=vocab).double()
    expected = probs * rows
    big = expected >= 5  # pool the small cells so every cell expects at least 5 draws
    f_obs = torch.cat([observed[big], observed[~big].sum().view(1)])
    f_exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    if float(f_exp[-1]) < 5:
        f_obs, f_exp = f_obs[:-1], f_exp[:-1]
    f_exp = f_exp * f_obs.sum() / f_exp.sum()
    assert chisquare(f_obs.numpy(), f_exp.numpy()).pvalue > 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_greedy_and_top_k_1_are_argmax(backend, dtype):
    logits = make_logits(37, 1000, dtype, seed=3)
    seeds = make_seeds(37)
    argmax = sanitize(logits).argmax(dim=-1)
    assert torch.equal(sample(logits, backend, seeds, temperature=0.0), argmax)
    assert torch.equal(sample(logits, backend, seeds, temperature=0.7, top_k=1), argmax)


def test_mixed_greedy_and_sampling_rows(backend):
    logits = make_logits(37, 1000, seed=4)
    seeds = make_seeds(37)
    temperature = torch.where(torch.arange(37) % 3 == 0, 0.0, 0.9)
    tokens = sample(logits, backend, seeds, step=2, temperature=temperature, top_k=40, top_p=0.9)
    assert torch.equal(tokens[::3], logits[::3].argmax(dim=-1))
    assert_reference_draw(tokens, logits, seeds, 2, temperature=temperature, top_k=40, top_p=0.9)
    assert not torch.equal(tokens, logits.argmax(dim=-1)), "sampling rows all took the argmax"


def test_nan_and_all_masked_rows(backend):
    logits = make_logits(6, 1000, seed=5)
    logits[0] = float("nan")
    logits[1] = float("-inf")
    logits[2, logits[2].argmax()] = float("nan")  # the would-be maximum is NaN: it counts as -inf
    logits[3, ::2] = float("nan")
    logits[4] = float("nan")
    logits[4, 999] = 1.0
    seeds = make_seeds(6)
    temperature = torch.tensor([1.0, 0.0, 1.0, 0.8, 1.0, 0.0])
    for params in (dict(temperature=temperature), dict(temperature=temperature, top_k=5, top_p=0.5, min_p=0.1)):
        tokens = sample(logits, backend, seeds, step=4, **params)
        assert tokens[0] == 0 and tokens[1] == 0 and tokens[4] == 999
        assert not bool(torch.isnan(logits[2:].gather(1, tokens[2:].view(-1, 1))).any())
        assert_reference_draw(tokens, logits, seeds, 4, **params)


def test_disabled_filters_are_no_ops(backend):
    logits = make_logits(7, 1000, seed=6)
    seeds = make_seeds(7)
    plain = sample(logits, backend, seeds, step=5, temperature=0.9)
    assert torch.equal(sample(logits, backend, seeds, step=5, temperature=0.9, top_k=1005, top_p=1.0, min_p=0.0), plain)
    assert torch.equal(sample(logits, backend, seeds, step=5, temperature=0.9, top_k=1000), plain)
    assert_reference_draw(plain, logits, seeds, 5, temperature=0.9)


def test_per_row_tensors_match_scalars(backend):
    logits = make_logits(7, 1000, seed=8)
    seeds = make_seeds(7)
    rows = dict(temperature=torch.tensor([0.5, 0.9, 1.3, 0.0, 1.0, 0.7, 2.0]),
                top_k=torch.tensor([0, 3, 50, 10, 2000, 1, 20]),
                top_p=torch.tensor([1.0, 0.5, 0.9, 0.3, 0.95, 1.0, 0.7]),
                min_p=torch.tensor([0.0, 0.2, 0.0, 0.5, 0.05, 0.0, 0.1]))
    tokens = sample(logits, backend, seeds, step=6, **rows)
    for b in range(7):
        scalars = {name: value[b].item() for name, value in rows.items()}
        assert tokens[b] == sample(logits[b:b + 1], backend, seeds[b:b + 1], step=6, **scalars)[0]
    assert_reference_draw(tokens, logits, seeds, 6, **rows)
    same = {name: torch.full((7,), FILTERS[name], dtype=value.dtype) for name, value in rows.items()}
    assert torch.equal(sample(logits, backend, seeds, step=6, **same),
                       sample(logits, backend, seeds, step=6, **FILTERS))


def test_top_p_pivot_inside_a_tie_group(backend):
    """Integer logits: top-k and top-p pivots fall inside groups of equal values, which are kept whole; every backend
    draws exactly what the reference draws (the CUDA kernel takes its shared-memory path here: top-k keeps <= 1024
    entries)."""
    logits = make_logits(37, 3000, seed=12, scale=2.0).round()
    seeds = make_seeds(37)
    for params in (dict(temperature=1.0, top_k=100, top_p=0.6), dict(temperature=0.7, top_k=1000, top_p=0.3),
                   dict(temperature=1.0, top_k=40, top_p=0.95, min_p=0.2)):
        tokens = sample(logits, backend, seeds, step=3, **params)
        assert bool(allowed_set(logits, **params).gather(1, tokens.view(-1, 1)).all())
        assert torch.equal(tokens, reference_sample(logits, seeds=seeds, step=3, **(dict(min_p=0.0) | params)))


@pytest.mark.parametrize("rows", ["bfloat16", "float16", "all-equal"])
def test_tied_rows_draw_the_reference_ids(backend, rows):
    """Regression: on rows with exact ties, where top-k / top-p cut through a group of equal values, the
    same seeds give the same ids on every backend (the reference used to keep a sort-order-dependent part of the
    group: a third of all-equal rows differed)."""
    batch = 24 if backend == "triton" else 200
    logits = {"bfloat16": make_logits(batch, 64, torch.bfloat16, seed=5, scale=3.0),
              "float16": make_logits(batch, 64, seed=5, scale=3.0).mul(4).round().to(torch.float16),
              "all-equal": torch.zeros(batch, 64)}[rows]
    seeds = make_seeds(batch)
    for params in (dict(top_k=5), dict(top_p=0.5), dict(top_k=10, top_p=0.7), dict(top_p=0.9, min_p=0.3)):
        params = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) | params
        expected = reference_sample(logits, seeds=seeds, step=3, **params)
        assert torch.equal(sample(logits, backend, seeds, step=3, **params), expected), params


def test_top_k_among_many_close_values(backend):
    """1500 distinct values in [1, 1.25): more candidates share the top radix digit of the k-th largest than the CUDA
    kernel gathers (1024), so its select continues in the row; then top-p runs on the few top-k kept (gathered), or
    the draw reads the row (top-p off)."""
    g = torch.Generator().manual_seed(13)
    logits = torch.randn(5, 5000, generator=g) - 3.0
    logits[:, :1500] = 1.0 + torch.rand(5, 1500, generator=g) * 0.2499
    seeds = make_seeds(5)
    for params in (dict(temperature=1.0, top_k=20, top_p=0.99), dict(temperature=1.0, top_k=30),
                   dict(temperature=1.0, top_k=1100, top_p=0.5)):
        tokens, _, _ = assert_logprobs(logits, backend, seeds, 8, **params)  # the kept mass: the kept set exactly
        assert_reference_draw(tokens, logits, seeds, 8, **params)


def test_reproducible_and_independent_of_the_batch(backend):
    logits = make_logits(37, 1000, seed=9, scale=1.0)
    seeds = make_seeds(37)
    first = sample(logits, backend, seeds, step=11, **FILTERS)
    assert torch.equal(sample(logits, backend, seeds, step=11, **FILTERS), first)
    assert not torch.equal(sample(logits, backend, seeds, step=12, **FILTERS), first)
    keep = torch.tensor([3, 17, 36])
    assert torch.equal(sample(logits[keep], backend, seeds[keep], step=11, **FILTERS), first[keep])


@pytest.mark.parametrize("bad, error", [
    (dict(logits=torch.zeros(5)), ValueError),
    (dict(logits=torch.zeros(2, 5, dtype=torch.int32)), TypeError),
    (dict(logits=torch.zeros(2, 0)), ValueError),
    (dict(temperature=-0.5), ValueError),
    (dict(top_k=2.5), TypeError),
    (dict(top_k=torch.tensor([1.0, 2.0])), TypeError),
    (dict(top_p=0.0), ValueError),
    (dict(top_p=torch.tensor([0.5, 1.5])), ValueError),
    (dict(min_p=torch.tensor([0.1, 0.1, 0.1])), ValueError),
    (dict(min_p="0.1"), TypeError),
    (dict(seeds=torch.zeros(2, dtype=torch.int32)), TypeError),
    (dict(seeds=torch.zeros(3, dtype=torch.int64)), ValueError),
], ids=lambda value: "" if isinstance(value, type) else "-".join(value))
def test_bad_input_raises(bad, error):
    args = dict(logits=torch.zeros(2, 5), seeds=torch.zeros(2, dtype=torch.int64)) | bad
    with pytest.raises(error):
        top_k_top_p_sample(args.pop("logits"), seeds=args.pop("seeds"), **args)


def test_compiled_op_passes_opcheck():
    pytest.importorskip("pydecode._C")
    op = torch.ops.pydecode.top_k_top_p_sample
    logits = make_logits(3, 100)
    torch.library.opcheck(op, (logits, torch.tensor([0.0, 1.0, 0.5]), 1.0, None, 10, None, 0.9, None, 0.0,
                               make_seeds(3), 2))


def test_logprobs_when_logit_over_temperature_overflows(backend):
    """Regression (found by tests/properties): finite logits whose ``logit / T`` overflows to -inf or +inf still report
    the input's logprob (NaN only for the processed one), on every backend; large logits lose no float32 ulps."""
    logits = torch.tensor([[-1.7e38], [-3e38], [3e38], [56896.0]])
    logits = torch.cat([logits, torch.full((4, 3), -3.4e38)], dim=1)
    logits[3, 1:] = torch.tensor([32752.0, -48672.0, 56000.0])
    seeds = make_seeds(4)
    temperature = torch.tensor([1e-3, 1e-3, 1e-3, 1.0])
    tokens, logprob, processed = sample(logits, backend, seeds, 2, temperature=temperature, return_logprobs=True)
    expected = sanitize(logits).double().log_softmax(-1).gather(1, tokens.view(-1, 1))[:, 0].float()
    torch.testing.assert_close(logprob, expected, rtol=1e-6, atol=1e-5)
    assert bool(processed[:3].isnan().all()) and bool(processed[3] <= 0)


def test_signed_zeros_are_one_tie_group(kernel_backend):
    """Regression (found by tests/properties): a float16 row of +0.0 and -0.0 (tiny logits that underflowed) is one
    group of equal values; top-k 1 keeps all of it on every backend (the CUDA kernel's radix select used to drop
    the -0.0 entries)."""
    logits = torch.zeros(44, 32, dtype=torch.float16)
    logits[:, ::3] = -0.0
    seeds = make_seeds(44)
    for params in (dict(top_k=1), dict(top_k=1, top_p=0.5, min_p=0.5), dict(top_k=3, top_p=0.25)):
        params = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) | params
        expected = reference_sample(logits, seeds=seeds, step=7, **params)
        assert torch.equal(sample(logits, kernel_backend, seeds, step=7, **params), expected), params
