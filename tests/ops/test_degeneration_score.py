"""degeneration_score on every backend against the pure-PyTorch reference (padded contexts, strided buffers, dtypes)."""
import pytest
import torch

from pydecode.ops.degeneration import degeneration_score
from pydecode.ops.degeneration.reference import degeneration_score as reference
from pydecode.ops.degeneration.reference import normalize_rows

TOLERANCE = {torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}  # fp32 math on identical inputs


def _inputs(batch, k, seq, hidden, dtype, device, padding=(), seed=0, spare=0):
    g = torch.Generator().manual_seed(seed)
    candidates = torch.randn(batch, k, hidden, generator=g).to(dtype)
    buffer = torch.randn(batch, seq + spare, hidden, generator=g).to(dtype)  # a longer buffer: strided batch rows
    mask = torch.ones(batch, seq + spare, dtype=torch.bool)
    for row, pad in enumerate(padding):
        mask[row, :pad] = False
    probs = torch.rand(batch, k, generator=g).softmax(-1)
    to = lambda t: t.to(device)  # noqa: E731
    return to(candidates), to(buffer)[:, :seq], to(mask)[:, :seq] if padding else None, to(probs)


def _check(got, want, dtype):
    best, scores = got
    ref_best, ref_scores = want
    assert best.dtype == torch.int64 and scores.dtype == torch.float32
    torch.testing.assert_close(scores.cpu(), ref_scores.cpu(), rtol=0, atol=TOLERANCE[dtype])
    # the chosen candidate is the reference's best up to the tolerance (exact ties may break either way)
    chosen = ref_scores.cpu().gather(1, best.cpu()[:, None]).squeeze(1)
    assert (chosen >= ref_scores.cpu().amax(-1) - 2 * TOLERANCE[dtype]).all()
    assert torch.equal(best.cpu(), ref_best.cpu()) or not torch.allclose(chosen, ref_scores.cpu().amax(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape,padding", [
    ((1, 4, 1, 64), ()),
    ((3, 5, 70, 48), (0, 30, 69)),
    ((2, 16, 130, 100), (129, 1)),
    ((37, 3, 9, 33), (0, 2, 8, 5)),
])
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_reference(kernel_backend, device, dtype, shape, padding, normalize):
    if kernel_backend == "triton" and device == "cpu" and (shape[0] > 8 or shape[1] * shape[2] > 600):
        pytest.skip("kept small under the Triton interpreter")
    candidates, context, mask, probs = _inputs(*shape, dtype, device, padding, spare=3)
    if not normalize:
        context = normalize_rows(context)
    alpha = torch.linspace(0, 1, shape[0], device=device)
    for a in (0.6, alpha):
        got = degeneration_score(candidates, context, mask, probs, a, normalize_context=normalize,
                                 backend=kernel_backend)
        _check(got, reference(candidates, context, mask, probs, a, normalize), dtype)


def test_long_context_and_wide_hidden(kernel_backend, device):
    if kernel_backend == "triton" and device == "cpu":
        pytest.skip("too slow under the Triton interpreter")
    for seq, hidden in ((32768, 64), (2048, 4096)):
        candidates, context, mask, probs = _inputs(2, 4, seq, hidden, torch.bfloat16, device, (0, seq - 100))
        got = degeneration_score(candidates, context, mask, probs, 0.6, backend=kernel_backend)
        _check(got, reference(candidates, context, mask, probs, 0.6), torch.bfloat16)


def test_penalty_picks_the_least_similar_candidate(backend, device):
    """alpha = 1: the candidate farthest from every (unmasked) context row wins; padding is never compared."""
    context = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]], device=device)
    candidates = torch.tensor([[[1.0, 0.1], [-1.0, -1.0], [-1.0, 0.05]]], device=device)
    probs = torch.full((1, 3), 1 / 3, device=device)
    mask = torch.tensor([[True, True, False]], device=device)  # the third row (-1, 0) is padding
    best, scores = degeneration_score(candidates, context, mask, probs, 1.0, backend=backend)
    assert best.item() == 1
    best, _ = degeneration_score(candidates, context, None, probs, 1.0, backend=backend)
    assert best.item() == 1  # (-1, -1): cos 0.707 at most vs ~1 for the others


def test_empty_or_fully_masked_context_ranks_by_probability(backend, device):
    candidates, context, _, probs = _inputs(2, 6, 5, 16, torch.float32, device)
    mask = torch.zeros(2, 5, dtype=torch.bool, device=device)
    best, scores = degeneration_score(candidates, context, mask, probs, 0.5, backend=backend)
    assert torch.equal(best.cpu(), probs.argmax(-1).cpu())
    torch.testing.assert_close(scores, 0.5 * probs)
    best, _ = degeneration_score(candidates, context[:, :0], None, probs, 0.5, backend=backend)
    assert torch.equal(best.cpu(), probs.argmax(-1).cpu())


def test_bad_arguments():
    candidates, context, mask, probs = _inputs(2, 3, 4, 8, torch.float32, "cpu", (1,))
    with pytest.raises(ValueError, match="penalty_alpha"):
        degeneration_score(candidates, context, mask, probs, 1.5)
    with pytest.raises(ValueError, match="context"):
        degeneration_score(candidates, context[:, :, :4], mask, probs, 0.5)
    with pytest.raises(TypeError, match="dtype"):
        degeneration_score(candidates, context.half(), mask, probs, 0.5)
    with pytest.raises(TypeError, match="probs"):
        degeneration_score(candidates, context, mask, probs[:, :2], 0.5)
    with pytest.raises(TypeError, match="context_mask"):
        degeneration_score(candidates, context, mask.long(), probs, 0.5)
