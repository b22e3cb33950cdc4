"""Triton-only checks of the sampling kernels against the reference (on CPU they run under TRITON_INTERPRET=1).

The shared per-op tests (test_sample.py, ...) cover every backend; these pin what only the Triton kernels can get
wrong: the random stream bit for bit, the draw token for token on awkward shapes and dtypes, per-row parameter
tensors beside compile-time scalars, and the torch.library registration.
"""
import os

import pytest
import torch

from pydecode.ops import reference

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton needs a GPU or TRITON_INTERPRET=1",
)
triton_random = pytest.importorskip("pydecode.triton_kernels._random")
from pydecode.triton_kernels import logprobs, penalties, sampling  # noqa: E402

from tests.support.devices import DEVICE  # noqa: E402

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def make_logits(batch, vocab, dtype, seed=0):
    """Peaked, LLM-like logits with exact ties (in every dtype) so top-k boundaries are exercised."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=gen) * 2.5
    logits[:, : vocab // 4] = logits[:, : vocab // 4].round()
    return logits.to(dtype).to(DEVICE)


def per_row_params(batch, vocab):
    """One filter mix per row, cycling: plain, top-k, top-p, min-p, all three, greedy, top-k >= vocab."""
    t = torch.tensor([1.0, 0.7, 1.3, 1.0, 0.8, 0.0, 1.1])
    k = torch.tensor([0, 20, 0, 0, 50, 3, vocab + 5])
    p = torch.tensor([1.0, 1.0, 0.6, 1.0, 0.85, 0.5, 1.0])
    m = torch.tensor([0.0, 0.0, 0.0, 0.2, 0.05, 0.0, 0.0])
    rows = torch.arange(batch) % 7
    return [x[rows].to(DEVICE) for x in (t, k, p, m)]


def both(logits, params, seeds, step):
    ours = sampling.top_k_top_p_sample(logits, *params, seeds, step)
    ref = reference.top_k_top_p_sample(logits, *params, seeds, step)
    return ours, ref


def test_random_bits_bit_exact():
    seeds = torch.tensor([0, 1, -5, 2**40 + 7, -(2**63), 2**63 - 1], dtype=torch.int64, device=DEVICE)
    for step in (0, 3, 2**31 + 5, 2**33 - 1):
        assert torch.equal(triton_random.random_bits(seeds, step, 1500), reference.random_bits(seeds, step, 1500))


@pytest.mark.parametrize("batch,vocab,dtype", [
    (37, 1000, torch.float32), (7, 49152, torch.bfloat16), (7, 1000, torch.float16), (1, 262144, torch.float32),
])
def test_per_row_tensors_match_reference(batch, vocab, dtype):
    logits = make_logits(batch, vocab, dtype)
    seeds = torch.arange(batch, dtype=torch.int64, device=DEVICE) * 7919 + 11
    ours, ref = both(logits, per_row_params(batch, vocab), seeds, step=4)
    assert torch.equal(ours.cpu(), ref.cpu())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", [
    (0.0, 0, 1.0, 0.0), (1.0, 0, 1.0, 0.0), (0.7, 40, 1.0, 0.0), (1.2, 0, 0.7, 0.0), (1.0, 0, 1.0, 0.1),
    (0.9, 30, 0.8, 0.05), (1.0, 2000, 1.0, 0.0), (1.0, 1, 1.0, 0.0),
], ids=["greedy", "plain", "top_k", "top_p", "min_p", "all", "k_over_vocab", "k1"])
def test_scalar_params_match_reference(params, dtype):
    logits = make_logits(5, 1000, dtype, seed=1)
    seeds = torch.tensor([3, 1, 4, 1, 5], dtype=torch.int64, device=DEVICE)
    ours, ref = both(logits, params, seeds, step=9)
    assert torch.equal(ours.cpu(), ref.cpu())
    if params[0] == 0.0:
        assert torch.equal(ours.cpu(), logits.float().argmax(-1).cpu())
    if params[1] == 1:  # top_k=1 keeps every tie of the max
        assert torch.equal(logits.float().gather(1, ours[:, None]), logits.float().amax(-1, keepdim=True))


def test_draws_cover_exactly_the_kept_set():
    """32 draws (fixed seeds: deterministic) from one row whose kept set is a few likely tokens hit all of them."""
    vocab, rows = 1000, 32
    row = make_logits(1, vocab, torch.float32, seed=2)[0] * 0.2 - 5.0
    row[[10, 20, 30, 40, 60, 50]] = torch.tensor([4.0, 3.9, 3.8, 3.7, 3.7, 3.5], device=DEVICE)
    logits = row.expand(rows, vocab).contiguous()
    seeds = torch.arange(rows, dtype=torch.int64, device=DEVICE)
    # top_k=4 keeps the tie 40/60; top_p=0.5 stops before the tie; min_p=0.5 keeps x >= 4 + log(0.5)
    for params, expect in (((1.0, 4, 1.0, 0.0), 5), ((1.0, 0, 0.5, 0.0), 3), ((1.0, 0, 1.0, 0.5), 6)):
        kept = torch.isfinite(reference.process_logits(logits[:1], *params)[0]).nonzero().flatten().cpu()
        ours = sampling.top_k_top_p_sample(logits, *params, seeds, 0).cpu()
        assert len(kept) == expect and set(ours.tolist()) == set(kept.tolist())


def test_nan_and_infinite_rows():
    logits = make_logits(4, 3000, torch.float32, seed=3)
    logits[0] = float("nan")
    logits[1] = float("-inf")
    logits[2, ::2] = float("nan")
    logits[3, 100:] = float("-inf")
    seeds = torch.arange(4, dtype=torch.int64, device=DEVICE)
    for params in ((1.0, 0, 1.0, 0.0), (0.0, 0, 1.0, 0.0), (1.0, 10, 0.9, 0.1), (1.0, 0, 0.5, 0.0)):
        ours, ref = both(logits, params, seeds, 1)
        assert torch.equal(ours.cpu(), ref.cpu())
        assert ours[0] == 0 and ours[1] == 0 and ours[3] < 100


def test_row_draw_independent_of_batch():
    logits = make_logits(7, 2000, torch.bfloat16, seed=4)
    seeds = torch.arange(7, dtype=torch.int64, device=DEVICE) + 100
    params = per_row_params(7, 2000)
    full = sampling.top_k_top_p_sample(logits, *params, seeds, 2)
    part = sampling.top_k_top_p_sample(logits[2:5], *[x[2:5] for x in params], seeds[2:5], 2)
    assert torch.equal(full[2:5], part)


def test_penalties_and_record_match_reference():
    gen = torch.Generator().manual_seed(5)
    batch, vocab = 5, 3000
    logits = (torch.randn(batch, vocab, generator=gen) * 3).to(DEVICE)
    counts = (torch.randint(0, 3, (batch, vocab), generator=gen, dtype=torch.int32)
              * (torch.rand(batch, vocab, generator=gen) < 0.1)).to(DEVICE)
    prompt = (torch.rand(batch, vocab, generator=gen) < 0.05).to(DEVICE)
    rep = torch.tensor([1.0, 1.2, 0.8, 1.0, 2.0], device=DEVICE)
    pres = torch.tensor([0.0, 0.1, -0.5, 0.0, 1.0], device=DEVICE)
    for args in ((prompt, 1.3, 0.5, 0.2), (None, rep, 0.0, pres), (prompt, 1.0, 0.0, 0.0)):
        ours, ref = logits.clone(), logits.clone()
        penalties.apply_penalties_(ours, counts, *args)
        reference.apply_penalties_(ref, counts, *args)
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    tokens = torch.tensor([0, vocab - 1, 7, 7, 123], device=DEVICE)
    ours, ref = counts.clone(), counts.clone()
    penalties.record_tokens_(ours, tokens)
    reference.record_tokens_(ref, tokens)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logprobs_match_reference(dtype):
    logits = make_logits(4, 3000, dtype, seed=6)
    logits[1, 5] = float("nan")
    tokens = torch.tensor([0, 5, 2999, 17], device=DEVICE)
    for top_n in (0, 5):
        ours = logprobs.token_logprobs(logits, tokens, top_n)
        ref = reference.token_logprobs(logits, tokens, top_n)
        torch.testing.assert_close(ours[0], ref[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours[1], ref[1], rtol=1e-5, atol=1e-5)
        assert ours[2].shape == ref[2].shape and ours[2].dtype == torch.int64
        torch.testing.assert_close(logits.float().gather(1, ours[2]), logits.float().gather(1, ref[2]))


def test_decode_step_compiles():
    """The ops are torch.library custom ops with fake impls: a decode step traces as one graph, same tokens."""
    def step(logits, counts, seeds):
        penalties.apply_penalties_(logits, counts, None, 1.2, 0.1, 0.0)
        tokens = sampling.top_k_top_p_sample(logits, torch.ones(3, device=DEVICE), 5, 0.9, 0.0, seeds, 0)
        penalties.record_tokens_(counts, tokens)
        return tokens, logprobs.token_logprobs(logits, tokens, 2)[0]

    logits = make_logits(3, 100, torch.float32, seed=7)
    counts = torch.zeros(3, 100, dtype=torch.int32, device=DEVICE)
    seeds = torch.arange(3, device=DEVICE)
    eager = step(logits.clone(), counts.clone(), seeds)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)(logits.clone(), counts.clone(), seeds)
    assert torch.equal(eager[0], compiled[0]) and torch.equal(eager[1], compiled[1])
