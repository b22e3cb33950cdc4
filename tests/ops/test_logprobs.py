"""Log-probabilities on every backend against the reference (pydecode.ops.logprobs.reference).

Values within 2e-5 absolute + 1e-5 relative (float32 log-softmax whose sum of exponentials is accumulated in a
different order: the reference's own float32 error is of that size at vocab 262144);
top-n ids compared through the reference's log-probabilities at them (ties, common in bfloat16, may order differently).
"""
import pytest
import torch

from pydecode.ops import reference, token_logprobs
from pydecode.ops.rows import sanitize

from tests.support.devices import on_device


def make_logits(batch, vocab, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, vocab, generator=gen) * 4).to(dtype)


def check(logits, tokens, top_n, backend):
    chosen, values, ids = on_device(token_logprobs, logits, tokens, top_n, backend=backend)
    ref_chosen, ref_values, _ = reference.token_logprobs(logits, tokens, top_n)
    n = min(top_n, logits.shape[1])
    assert chosen.dtype == values.dtype == torch.float32 and ids.dtype == torch.int64
    assert values.shape == ids.shape == (logits.shape[0], n)
    torch.testing.assert_close(chosen, ref_chosen, rtol=1e-5, atol=2e-5, equal_nan=True)
    torch.testing.assert_close(values, ref_values, rtol=1e-5, atol=2e-5, equal_nan=True)
    if n:
        log_probs = sanitize(logits).log_softmax(-1)
        torch.testing.assert_close(log_probs.gather(1, ids), ref_values, rtol=1e-5, atol=2e-5, equal_nan=True)
        assert bool((ids[:, 1:] != ids[:, :-1]).all()), "a top id repeats"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("vocab,batch", [(1000, 37), (49152, 7), (262144, 1)])
def test_logprobs_match_reference(kernel_backend, vocab, batch, dtype):
    if kernel_backend == "triton" and vocab > 1000 and dtype != torch.float32:
        pytest.skip("the Triton interpreter is slow: big vocabularies run on float32 only")
    logits = make_logits(batch, vocab, dtype, seed=vocab)
    tokens = torch.randint(0, vocab, (batch,), generator=torch.Generator().manual_seed(1))
    tokens[0] = logits[0].float().argmax()
    for top_n in (0, 1, 5):
        check(logits, tokens, top_n, kernel_backend)


def test_nan_rows_and_top_n_above_vocab(backend):
    logits = make_logits(4, 10, torch.float32, seed=3)
    logits[0, 2] = float("nan")  # counts as -inf
    logits[1] = float("-inf")     # no finite logit: every log-probability is NaN, as the reference's
    logits[2, :5] = float("-inf")
    tokens = torch.tensor([2, 0, 1, 9])
    check(logits, tokens, 12, backend)
    chosen, values, _ = on_device(token_logprobs, logits, tokens, 12, backend=backend)
    assert chosen[0] == float("-inf") and values.shape == (4, 10)


def test_bad_input_raises():
    with pytest.raises(ValueError):
        token_logprobs(torch.zeros(2, 5), torch.zeros(2, dtype=torch.int64), -1)
    with pytest.raises(ValueError):
        token_logprobs(torch.zeros(2, 5), torch.zeros(2, dtype=torch.int64), True)
    with pytest.raises(TypeError):
        token_logprobs(torch.zeros(2, 5, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))


@pytest.mark.parametrize("tokens, error, match", [
    (torch.tensor([0, 5]), ValueError, r"tokens must lie in \[0, vocab = 5\), got 5"),
    (torch.tensor([-1, 0]), ValueError, "got -1"),
    (torch.tensor([0, 1, 2]), ValueError, r"tokens must have shape \(2,\)"),
    (torch.tensor([0.0, 1.0]), TypeError, "tokens must be int64 or int32"),
])
def test_bad_tokens_raise_the_same_error_on_every_backend(backend, tokens, error, match):
    with pytest.raises(error, match=match):
        on_device(token_logprobs, torch.zeros(2, 5), tokens, 2, backend=backend)
