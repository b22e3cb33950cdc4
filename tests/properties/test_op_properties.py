"""Properties of the other ops on every backend against the reference: penalties, logprobs, beam top-k, the
degeneration score of contrastive search and speculative verification, over drawn shapes and awkward values.

Tolerances (float32 math in a different order): penalties 1e-6 relative (the same float32 operations); logprobs
2e-5 absolute + 1e-5 relative, plus a few float32 ulps of the row's largest logit; beam scores 1e-5; degeneration
scores 1e-5 absolute; verify exact. Ids are compared exactly, or through the reference's values where ties may order
differently.
"""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pydecode.ops import apply_penalties_, reference, token_logprobs
from pydecode.ops.beam_topk import beam_topk
from pydecode.ops.beam_topk.reference import beam_scores_of
from pydecode.ops.beam_topk.reference import beam_topk as reference_beam_topk
from pydecode.ops.degeneration import degeneration_score
from pydecode.ops.degeneration.reference import degeneration_score as reference_degeneration
from pydecode.ops.degeneration.reference import normalize_rows
from pydecode.ops.rows import sanitize
from pydecode.ops.verify import verify
from pydecode.ops.verify.reference import verify as reference_verify

from tests.properties.strategies import examples, logits_batches, seeds_for, vocab_sizes
from tests.support.devices import on_device, to_device


def _limits(backend):
    """(max batch, max vocab) of drawn logits: the Triton interpreter runs ~0.1 s per row."""
    return (4, 3000) if backend == "triton" else (64, 300_000)


def _ulps(logits):
    finite = torch.where(torch.isfinite(logits), logits.double().abs(), 0.0)
    return 4 * torch.finfo(torch.float32).eps * (finite.amax(-1, keepdim=True) if logits.shape[1] else finite)


def same(a, b):
    """Elementwise: equal (infinities included) or both NaN."""
    return (a == b) | (a.isnan() & b.isnan())


@settings(max_examples=examples(0.5))
@given(data=st.data())
def test_penalties_match_reference(kernel_backend, data):
    max_batch, max_vocab = _limits(kernel_backend)
    logits = data.draw(logits_batches(max_batch, max_vocab, dtypes=(torch.float32,)), label="logits")
    batch, vocab = logits.shape
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    counts = torch.randint(0, 5, (batch, vocab), generator=gen, dtype=torch.int32)
    counts *= torch.rand(batch, vocab, generator=gen) < 0.2
    prompt = data.draw(st.sampled_from((None, "mask")), label="prompt")
    prompt = None if prompt is None else torch.rand(batch, vocab, generator=gen) < 0.1

    def penalty(low, high, off):
        values = st.sampled_from((off, low, high)) | st.floats(low, high)
        if data.draw(st.booleans()):
            return data.draw(values)
        return torch.tensor(data.draw(st.lists(values, min_size=batch, max_size=batch)), dtype=torch.float32)

    args = (penalty(1e-3, 1e3, 1.0), penalty(-2.0, 2.0, 0.0), penalty(-2.0, 2.0, 0.0))
    expected = reference.apply_penalties_(logits.clone(), counts, prompt, *args)
    got = to_device(logits.clone())
    apply_penalties_(got, to_device(counts), to_device(prompt), *map(to_device, args), backend=kernel_backend)
    torch.testing.assert_close(got.cpu(), expected, rtol=1e-6, atol=1e-6, equal_nan=True)


@settings(max_examples=examples(0.5))
@given(data=st.data())
def test_logprobs_match_reference(kernel_backend, data):
    logits = data.draw(logits_batches(*_limits(kernel_backend)), label="logits")
    batch, vocab = logits.shape
    tokens = torch.tensor(data.draw(st.lists(st.integers(0, vocab - 1), min_size=batch, max_size=batch)),
                          dtype=torch.int64).reshape(batch)
    top_n = data.draw(st.sampled_from((0, 1, 5, 20)), label="top_n")
    chosen, values, ids = on_device(token_logprobs, logits, tokens, top_n, backend=kernel_backend)
    ref_chosen, ref_values, _ = reference.token_logprobs(logits, tokens, top_n)
    n = min(top_n, vocab)
    assert values.shape == ids.shape == (batch, n) and chosen.shape == (batch,)
    slack = _ulps(logits)
    close = ((chosen.double() - ref_chosen.double()).abs() <= 2e-5 + 1e-5 * ref_chosen.double().abs() + slack[:, 0])
    assert bool((close | same(chosen, ref_chosen)).all()), (chosen, ref_chosen)
    if n:
        assert bool(((ids >= 0) & (ids < vocab)).all())
        # ids through the reference's values: a tie may put equal values in another order
        log_probs = sanitize(logits).double().log_softmax(-1)
        values_at_ids = log_probs.gather(1, ids)
        ok = ((values.double() - ref_values.double()).abs() <= 2e-5 + 1e-5 * ref_values.double().abs() + slack)
        ok &= (values_at_ids - ref_values.double()).abs() <= 2e-5 + 1e-5 * ref_values.double().abs() + slack
        assert bool((ok | same(values, ref_values)).all()), (values, ref_values)
        assert bool((ids[:, 1:] != ids[:, :-1]).all()), "a top id repeats"


@settings(max_examples=examples(0.5))
@given(data=st.data())
def test_beam_topk_matches_reference(kernel_backend, data):
    num_beams = data.draw(st.integers(1, 6), label="num_beams")
    items = data.draw(st.integers(1, 3), label="batch items")
    vocab = data.draw(vocab_sizes(130 if kernel_backend == "triton" else 70_000), label="vocab")
    rows = items * num_beams
    logits = _rows_like(data, rows, vocab)
    scores = torch.tensor(data.draw(st.lists(st.sampled_from((0.0, -1.5, -1e9)) | st.floats(-50, 0),
                                             min_size=rows, max_size=rows)), dtype=torch.float32)
    k = data.draw(st.sampled_from(sorted({1, min(2 * num_beams, num_beams * vocab), min(1025, num_beams * vocab),
                                         num_beams * vocab})), label="k")
    log_softmax = data.draw(st.booleans(), label="log_softmax")
    got = on_device(beam_topk, logits, scores, num_beams, k, log_softmax=log_softmax, backend=kernel_backend)
    want = reference_beam_topk(logits, scores, num_beams, k, log_softmax)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5, equal_nan=True)
    assert_same_candidates(got, want, logits, scores, num_beams, log_softmax)


def assert_same_candidates(got, want, logits, scores, num_beams, log_softmax):
    """The reference's (token, beam) ids, but where two scores tie within float32 rounding (distinct logits whose
    log-softmax rounds apart on one backend and together on another): there the ids may swap, and every id must
    carry, under the reference's scores, the score of the place it took."""
    same_ids = (got[1] == want[1]) & (got[2] == want[2])
    vocab = logits.shape[1]
    ref_scores = beam_scores_of(logits, scores, log_softmax).view(-1, num_beams * vocab)
    at_ids = ref_scores.gather(1, got[2] * vocab + got[1])
    near = (at_ids - want[0]).abs() <= 1e-5 * want[0].abs().clamp(min=1.0)
    assert bool((same_ids | near | same(at_ids, want[0])).all()), (got, want)
    flat = got[2] * vocab + got[1]
    assert bool((flat.sort(-1).values.diff(dim=-1) != 0).all()), "a candidate repeats"


def _rows_like(data, rows, vocab):
    """(rows, vocab) float32 logits of the kinds beam search meets (ties, masked rows, NaN)."""
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    logits = torch.randn(rows, vocab, generator=gen) * data.draw(st.sampled_from((1.0, 4.0, 1e-3)), label="scale")
    kinds = data.draw(st.lists(st.sampled_from(("plain", "ties", "masked", "nan", "neg_inf")), min_size=rows,
                               max_size=rows), label="row kinds")
    for row, kind in enumerate(kinds):
        some = torch.rand(vocab, generator=gen) < 0.2
        if kind == "ties":
            logits[row] = logits[row].round()
        elif kind == "masked":
            logits[row] = float("-inf")
        elif kind == "nan":
            logits[row, some] = float("nan")
        elif kind == "neg_inf":
            logits[row, some] = float("-inf")
    return logits.to(data.draw(st.sampled_from((torch.float32, torch.float16, torch.bfloat16)), label="dtype"))


@settings(max_examples=examples(0.5))
@given(data=st.data())
def test_degeneration_score_matches_reference(kernel_backend, data):
    small = kernel_backend == "triton"
    batch = data.draw(st.integers(1, 4 if small else 16), label="batch")
    k = data.draw(st.integers(1, 8), label="k")
    seq = data.draw(st.sampled_from((1, 2, 31, 33)) | st.integers(1, 80 if small else 600), label="seq")
    hidden = data.draw(st.sampled_from((1, 3, 64, 65)) | st.integers(1, 96 if small else 300), label="hidden")
    dtype = data.draw(st.sampled_from((torch.float32, torch.float16, torch.bfloat16)), label="dtype")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    candidates = (torch.randn(batch, k, hidden, generator=gen) * 3).to(dtype)
    context = (torch.randn(batch, seq, hidden, generator=gen) * 3).to(dtype)
    if data.draw(st.booleans(), label="repeated candidate"):  # a candidate equal to a context row: cosine 1
        context[:, -1] = candidates[:, 0]
    mask = None
    if data.draw(st.booleans(), label="mask"):
        mask = torch.rand(batch, seq, generator=gen) < 0.7
        mask[0] = False  # a row with nothing to compare against
    probs = torch.rand(batch, k, generator=gen).softmax(-1)
    alpha = data.draw(st.sampled_from((0.0, 1.0, 0.6)) | st.floats(0.0, 1.0), label="alpha")
    normalize = data.draw(st.booleans(), label="normalize_context")
    if not normalize:
        context = normalize_rows(context)
    best, scores = on_device(degeneration_score, candidates, context, mask, probs, alpha,
                             normalize_context=normalize, backend=kernel_backend)
    ref_best, ref_scores = reference_degeneration(candidates, context, mask, probs, alpha, normalize)
    torch.testing.assert_close(scores, ref_scores, rtol=0, atol=1e-5)
    assert bool(((best >= 0) & (best < k)).all())
    chosen = ref_scores.gather(1, best[:, None])[:, 0]
    assert bool((chosen >= ref_scores.amax(-1) - 2e-5).all()), "not the reference's best candidate"


@settings(max_examples=examples(0.5))
@given(data=st.data())
def test_verify_matches_reference(kernel_backend, data):
    small = kernel_backend == "triton"
    batch = data.draw(st.integers(1, 3 if small else 16), label="batch")
    k = data.draw(st.integers(1, 3 if small else 6), label="k")
    vocab = data.draw(st.sampled_from((1, 2, 33, 1025)) | st.integers(1, 200 if small else 5000), label="vocab")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    scale = data.draw(st.sampled_from((1.0, 4.0, 1e-3)), label="scale")
    target = torch.randn(batch, k + 1, vocab, generator=gen) * scale
    draft = torch.randn(batch, k, vocab, generator=gen) * scale
    if data.draw(st.booleans(), label="ties"):
        target, draft = target.round(), draft.round()
    if data.draw(st.booleans(), label="filtered"):  # processed logits: masked entries, each row keeps one
        target = target.masked_fill(torch.rand(target.shape, generator=gen) < 0.5, float("-inf"))
        draft = draft.masked_fill(torch.rand(draft.shape, generator=gen) < 0.5, float("-inf"))
        target[..., 0] = draft[..., 0] = 0.0
    tokens = torch.multinomial(draft.softmax(-1).reshape(-1, vocab), 1, generator=gen).reshape(batch, k)
    if data.draw(st.booleans(), label="target's argmax drafted"):
        tokens = target[:, :k].argmax(-1)
    num_draft = torch.randint(0, k + 1, (batch,), generator=gen)
    draft_logits = draft if data.draw(st.booleans(), label="draft model") else None
    temperature = data.draw(st.sampled_from((0.0, 1.0)) | st.just(
        (torch.rand(batch, generator=gen) < 0.5).float()), label="temperature")
    seeds = seeds_for(data.draw, batch)
    step = data.draw(st.integers(0, 2**31 - 1), label="step")
    got = on_device(verify, tokens, draft_logits, target, num_draft, temperature, seeds=seeds, step=step,
                    backend=kernel_backend)
    expected = reference_verify(tokens, draft_logits, target, num_draft, temperature, seeds, step)
    assert bool(((got[0] >= 0) & (got[0] <= num_draft)).all()) and bool(((got[1] >= 0) & (got[1] < vocab)).all())
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
