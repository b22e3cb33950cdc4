"""beam_topk on every backend against the pure-PyTorch reference: odd shapes, ties, -inf and NaN rows."""
import pytest
import torch

from pydecode.ops.beam_topk import beam_topk
from pydecode.ops.beam_topk.reference import beam_topk as reference

# (num_beams, vocab, k); the Triton interpreter on CPU gets the small ones
SHAPES = [(1, 1000, 2), (4, 1000, 8), (37, 1000, 74), (4, 49152, 8), (1, 262144, 2), (4, 262144, 12), (3, 5, 15)]
INTERPRETER_SHAPES = {(1, 1000, 2), (4, 1000, 8), (3, 5, 15)}


def _check(logits, scores, num_beams, k, log_softmax, backend):
    got = beam_topk(logits, scores, num_beams, k, log_softmax=log_softmax, backend=backend)
    want = reference(logits, scores, num_beams, k, log_softmax)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])


def _interpreted(backend, device):
    return backend == "triton" and device == "cpu"


@pytest.mark.parametrize("num_beams,vocab,k", SHAPES)
@pytest.mark.parametrize("log_softmax", [True, False])
def test_matches_reference(kernel_backend, device, num_beams, vocab, k, log_softmax):
    if _interpreted(kernel_backend, device) and (num_beams, vocab, k) not in INTERPRETER_SHAPES:
        pytest.skip("too slow for the Triton interpreter")
    g = torch.Generator().manual_seed(vocab + num_beams)
    logits = torch.randn(2 * num_beams, vocab, generator=g).to(device)
    scores = torch.randn(2 * num_beams, generator=g).to(device)
    _check(logits, scores, num_beams, k, log_softmax, kernel_backend)


def test_ties_go_to_the_smaller_index(backend, device):
    logits = torch.zeros(8, 300, device=device)
    logits[:, ::7] = 1.0  # many equal values, inside and across beams
    scores = torch.zeros(8, device=device)
    _check(logits, scores, 4, 8, True, backend)
    _check(logits.round(), scores, 4, 8, False, backend)


def test_neg_inf_and_nan_rows(backend, device):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 500, generator=g).to(device)
    logits[0] = float("-inf")  # a beam with nothing left
    logits[1, 10:] = float("-inf")  # fewer finite values than k
    logits[2, 5] = float("nan")
    logits[4:8] = float("-inf")  # a whole batch item: every candidate is -inf, in index order
    scores = torch.tensor([0.0, -1e9, -2.0, -0.5, 0.0, 0.0, 0.0, 0.0], device=device)
    _check(logits, scores, 4, 8, True, backend)
    _check(logits, scores, 4, 8, False, backend)


def test_wide_ties_and_dead_rows_at_large_vocab(backend, device):
    """Thousands of equal scores in a row (all -inf, all zero, rounded): the top candidates are decided by index, far
    down the keys (the CUDA kernel's radix select runs through all its levels)."""
    if _interpreted(backend, device):
        pytest.skip("too slow for the Triton interpreter")
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 49152, generator=g)
    logits[0] = float("-inf")
    logits[1] = 0.0
    logits[2] = logits[2].round()
    logits[5, 40000:] = 9.0
    logits[5, [7, 700, 7000]] = 20.0  # above the tied bin: counted once, not again at every level
    scores = torch.tensor([0.0, -1.0, -2.0, -3.0, 0.0, -0.5, -0.5, -1.0])
    _check(logits.to(device), scores.to(device), 4, 8, True, backend)
    _check(logits.to(device), scores.to(device), 4, 8, False, backend)


def test_first_step_takes_beam_zero(backend, device):
    """Beam search starts with beam scores (0, -1e9, ...): all candidates come from beam 0."""
    logits = torch.randn(4, 300, generator=torch.Generator().manual_seed(2)).repeat(1, 1).to(device)
    scores = torch.tensor([0.0, -1e9, -1e9, -1e9], device=device)
    _, _, beams = beam_topk(logits, scores, 4, 8, backend=backend)
    assert bool((beams == 0).all())


@pytest.mark.parametrize("num_beams,vocab,k", [(1, 2000, 1025), (600, 4, 1200), (2, 3000, 6000)])
def test_k_beyond_the_cuda_tile(backend, device, num_beams, vocab, k):
    """Above the CUDA kernel's 1024 candidates (beam search with num_beams > 512) every backend still answers."""
    if _interpreted(backend, device) and num_beams * vocab > 2000:
        pytest.skip("too slow for the Triton interpreter")
    g = torch.Generator().manual_seed(k)
    logits = torch.randn(num_beams, vocab, generator=g).round().to(device)  # rounded: ties across the cut
    _check(logits, torch.randn(num_beams, generator=g).to(device), num_beams, k, True, backend)


def test_scores_tied_by_rounding(backend, device):
    """Distinct fp16 logits whose float32 log-softmax rounds to one value on some backend (found by the long property
    run): every backend returns the same scores, and the same candidates up to swaps inside such a tie."""
    logits = (torch.randn(1, 341, generator=torch.Generator().manual_seed(31)) * 1e-3).to(torch.float16)
    got = beam_topk(logits.to(device), torch.zeros(1, device=device), 1, 341, backend=backend)
    want = reference(logits, torch.zeros(1), 1, 341)
    torch.testing.assert_close(got[0].cpu(), want[0], atol=1e-5, rtol=1e-5)
    at_ids = torch.log_softmax(logits.float(), -1).gather(1, got[1].cpu())
    torch.testing.assert_close(at_ids, want[0], atol=1e-5, rtol=0)
    assert torch.equal(got[1].cpu().sort().values, torch.arange(341)[None])


def test_bad_arguments():
    logits = torch.zeros(6, 10)
    with pytest.raises(ValueError, match="multiple of num_beams"):
        beam_topk(logits, torch.zeros(6), 4, 2)
    with pytest.raises(ValueError, match="k must be"):
        beam_topk(logits, torch.zeros(6), 3, 31)
    with pytest.raises(ValueError, match="num_beams"):
        beam_topk(logits, torch.zeros(6), 0, 2)
    with pytest.raises(ValueError, match="beam_scores"):
        beam_topk(logits, torch.zeros(5), 3, 2)


def test_absorbed_ties_keep_the_rows_larger_logits(backend, device):
    """Regression (found by tests/properties): a beam score of -1e9 rounds every candidate of a row to one float32
    score; the row's larger logits win on every backend (the reference used to pick the smallest token ids)."""
    g = torch.Generator().manual_seed(1317)
    logits = (torch.randn(4, 128, generator=g) * 1e-3).to(torch.bfloat16)
    logits[2] = float("-inf")
    logits[3, ::5] = float("nan")
    scores = torch.tensor([-1e9, -3.2, -1e9, -1e9])
    for log_softmax in (False, True):
        _check(logits.to(device), scores.to(device), 2, 4, log_softmax, backend)
    tokens = beam_topk(logits.to(device), scores.to(device), 2, 4, log_softmax=False, backend=backend)[1].cpu()
    largest = torch.sort(logits[3].float().nan_to_num(float("-inf")), descending=True, stable=True).indices[:4]
    assert torch.equal(tokens[1].sort().values, largest.sort().values)


def test_signed_zeros_tie(backend, device):
    """Regression (found by tests/properties): -0.0 and +0.0 are equal logits, so ties go to the smaller token (the
    Triton kernel used to rank -0.0 below +0.0)."""
    logits = torch.zeros(4, 40)
    logits[:, ::2] = -0.0
    scores = torch.tensor([-3.0, -1.0, 0.0, -2.0])
    for log_softmax in (False, True):
        _check(logits.to(device), scores.to(device), 2, 3, log_softmax, backend)
