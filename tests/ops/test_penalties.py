"""Penalties and token counting on every backend against the reference (pydecode.ops.penalties.reference).

Penalised logits must match to 1e-6 relative (the C++ kernels do the reference's float32 operations in the same
order and match bit for bit; the tolerance leaves room for a fused multiply-add on other backends).
"""
import pytest
import torch

from pydecode.ops import apply_penalties_, record_tokens_, reference

from tests.support.devices import to_device


def make_inputs(batch, vocab, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=gen) * 5
    counts = torch.randint(0, 4, (batch, vocab), generator=gen, dtype=torch.int32)
    counts *= torch.rand(batch, vocab, generator=gen) < 0.05
    prompt = torch.rand(batch, vocab, generator=gen) < 0.03
    return logits, counts, prompt


@pytest.mark.parametrize("vocab,batch", [(1000, 37), (49152, 7), (262144, 1)])
def test_penalties_match_reference(kernel_backend, vocab, batch):
    logits, counts, prompt = make_inputs(batch, vocab, seed=vocab)
    gen = torch.Generator().manual_seed(1)
    repetition = 1.0 + torch.rand(batch, generator=gen)
    frequency = torch.rand(batch, generator=gen) * 4 - 2
    presence = torch.rand(batch, generator=gen) * 4 - 2
    if batch > 1:  # a row without penalties is left as it is
        repetition[0], frequency[0], presence[0] = 1.0, 0.0, 0.0
    for args in ((repetition, frequency, presence), (1.3, 0.5, -0.25), (repetition, 0.0, 0.7)):
        for mask in (prompt, None):
            expected = reference.apply_penalties_(logits.clone(), counts, mask, *args)
            got = to_device(logits.clone())
            assert apply_penalties_(got, to_device(counts), to_device(mask), *map(to_device, args),
                                    backend=kernel_backend) is got
            got = got.cpu()
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
            if batch > 1 and all(isinstance(a, torch.Tensor) for a in args):
                assert torch.equal(got[0], logits[0])
            assert not torch.equal(got[-1], logits[-1])


def test_no_penalty_is_a_no_op(backend):
    logits, counts, prompt = make_inputs(7, 1000)
    got = to_device(logits.clone())
    apply_penalties_(got, to_device(counts), to_device(prompt), 1.0, 0.0, 0.0, backend=backend)
    assert torch.equal(got.cpu(), logits)


def test_record_tokens(backend):
    counts = to_device(torch.zeros(7, 1000, dtype=torch.int32))
    expected = torch.zeros(7, 1000, dtype=torch.int32)
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        tokens = torch.randint(0, 1000, (7,), generator=gen)
        tokens[3] = 999  # the same token again and again
        assert record_tokens_(counts, to_device(tokens), backend=backend) is counts
        reference.record_tokens_(expected, tokens)
    counts = counts.cpu()
    assert torch.equal(counts, expected)
    assert int(counts[3, 999]) == 5 and int(counts.sum()) == 35


@pytest.mark.parametrize("bad, error", [
    (dict(logits=torch.zeros(2, 5, dtype=torch.float16)), TypeError),
    (dict(counts=torch.zeros(2, 5, dtype=torch.int64)), TypeError),
    (dict(counts=torch.zeros(2, 4, dtype=torch.int32)), TypeError),
    (dict(prompt=torch.zeros(2, 5, dtype=torch.int32)), TypeError),
    (dict(repetition=0.0), ValueError),
    (dict(frequency=torch.tensor([0.5, 3.0])), ValueError),
    (dict(presence=torch.zeros(3)), ValueError),
    (dict(presence="0.5"), TypeError),
], ids=lambda value: "" if isinstance(value, type) else "-".join(value))
def test_bad_input_raises(bad, error):
    args = dict(logits=torch.zeros(2, 5), counts=torch.zeros(2, 5, dtype=torch.int32), prompt=None) | bad
    with pytest.raises(error):
        apply_penalties_(args.pop("logits"), args.pop("counts"), args.pop("prompt"), **args)


@pytest.mark.parametrize("counts, tokens, error, match", [
    (torch.zeros(2, 5, dtype=torch.int32), torch.tensor([0, 5]), ValueError, r"tokens must lie in \[0, vocab = 5\)"),
    (torch.zeros(2, 5, dtype=torch.int32), torch.tensor([-3, 0]), ValueError, "got -3"),
    (torch.zeros(2, 5, dtype=torch.int32), torch.tensor([0]), ValueError, r"tokens must have shape \(2,\)"),
    (torch.zeros(2, 5, dtype=torch.int64), torch.tensor([0, 1]), TypeError, "token_counts must be a contiguous int32"),
])
def test_record_bad_input_raises_the_same_error_on_every_backend(backend, counts, tokens, error, match):
    with pytest.raises(error, match=match):
        record_tokens_(to_device(counts), to_device(tokens), backend=backend)


def test_strided_prompt_mask_and_tokens(kernel_backend, device):
    """Non-contiguous inputs (a sliced mask, a strided token column) must give the reference's result."""
    from pydecode.ops.penalties import reference

    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 300, generator=g).to(device)
    counts = torch.randint(0, 3, (3, 300), generator=g, dtype=torch.int32).to(device)
    wide_mask = torch.rand(3, 301, generator=g).to(device) < 0.2
    expected = reference.apply_penalties_(logits.clone(), counts, wide_mask[:, :300].contiguous(), 1.3, 0.2, 0.1)
    got = apply_penalties_(logits.clone(), counts, wide_mask[:, :300], 1.3, 0.2, 0.1, backend=kernel_backend)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    tokens = torch.tensor([[5, 1], [7, 2], [9, 3]], device=device)[:, 0]
    got_counts = record_tokens_(counts.clone(), tokens, backend=kernel_backend)
    expected_counts = reference.record_tokens_(counts.clone(), tokens.contiguous())
    assert torch.equal(got_counts, expected_counts)
