"""One error rule on every backend: the same (possibly bad) arguments give every backend the outcome of the torch
reference backend, and a bad argument is always a ``ValueError`` / ``TypeError`` (never an ``IndexError``, a kernel
check's ``RuntimeError``, a silent out-of-bounds read or write).

Each example takes one op and makes one of its arguments drawn from valid and invalid values alike (ids out of the
vocabulary, wrong dtypes and shapes, ``k`` beyond a kernel's tile, parameters past their range edges).
"""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pydecode.ops import apply_penalties_, record_tokens_, token_logprobs, top_k_top_p_sample
from pydecode.ops.beam_topk import beam_topk
from pydecode.ops.verify import verify

from tests.properties.strategies import examples
from tests.support.devices import on_device

BATCH, VOCAB = 3, 11


def _ids(data, label, n):
    """n token ids, each in the vocabulary or just / far outside it; int64, int32 or float; sometimes a wrong shape."""
    values = st.sampled_from((-1, VOCAB, VOCAB + 1, -(2**40), 2**40)) | st.integers(0, VOCAB - 1)
    ids = data.draw(st.lists(values, min_size=n, max_size=n) | st.lists(values, max_size=n + 2), label=label)
    dtype = data.draw(st.sampled_from((torch.int64, torch.int32, torch.float32)), label=f"{label} dtype")
    if dtype == torch.int32:
        ids = [min(max(i, -(2**31)), 2**31 - 1) for i in ids]
    return torch.tensor(ids, dtype=dtype)


def _per_row(data, label, values):
    if data.draw(st.booleans(), label=f"{label} per row"):
        return torch.tensor(data.draw(st.lists(values, min_size=BATCH, max_size=BATCH), label=label))
    return data.draw(values, label=label)


def _case(data):
    """(op, args, kwargs) with one argument drawn from valid and invalid values."""
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    logits = torch.randn(BATCH, VOCAB, generator=gen)
    seeds = torch.arange(BATCH)
    op = data.draw(st.sampled_from(("sample", "logprobs", "record", "penalties", "beam_topk", "verify")), label="op")
    if op == "sample":
        param = data.draw(st.sampled_from(("temperature", "top_k", "top_p", "min_p")), label="param")
        values = st.sampled_from((-1, 0, 1, VOCAB, VOCAB + 1, 0.5, 1.5, float("nan"), float("inf"))) \
            | st.floats(-2, 2)
        return top_k_top_p_sample, (logits,), {param: _per_row(data, param, values), "seeds": seeds, "step": 0}
    if op == "logprobs":
        top_n = data.draw(st.sampled_from((-1, 0, 2, VOCAB, VOCAB + 3)), label="top_n")
        return token_logprobs, (logits, _ids(data, "tokens", BATCH), top_n), {}
    if op == "record":
        counts = torch.zeros(BATCH, VOCAB, dtype=data.draw(st.sampled_from((torch.int32, torch.int64)), label="dt"))
        return record_tokens_, (counts, _ids(data, "tokens", BATCH)), {}
    if op == "penalties":
        counts = torch.randint(0, 3, (BATCH, VOCAB), generator=gen, dtype=torch.int32)
        values = st.sampled_from((-3.0, -2.0, 0.0, 1.0, 2.0, 3.0, float("nan"))) | st.floats(-5, 5)
        return apply_penalties_, (logits, counts, None, _per_row(data, "repetition", values),
                                  _per_row(data, "frequency", values), _per_row(data, "presence", values)), {}
    if op == "beam_topk":
        num_beams = data.draw(st.sampled_from((0, 1, 2, 3)), label="num_beams")
        rows = 2 * max(num_beams, 1)
        k = data.draw(st.sampled_from((0, 1, 2, 2.0, VOCAB * num_beams, VOCAB * num_beams + 1)), label="k")
        return beam_topk, (torch.randn(rows, VOCAB, generator=gen), torch.zeros(rows), num_beams, k), {}
    drafts = _ids(data, "draft_tokens", 2 * BATCH)
    drafts = drafts.reshape(BATCH, -1) if drafts.numel() == 2 * BATCH else drafts
    num_draft = data.draw(st.lists(st.integers(-1, 3), min_size=BATCH, max_size=BATCH), label="num_draft")
    target = torch.randn(BATCH, 3, VOCAB, generator=gen)
    return verify, (drafts, None, target, torch.tensor(num_draft)), {"seeds": seeds, "step": 0}


def _outcome(fn, args, kwargs, backend):
    try:
        on_device(fn, *[a.clone() if isinstance(a, torch.Tensor) else a for a in args], backend=backend, **kwargs)
    except Exception as error:  # noqa: BLE001  (the exception's type is the outcome compared)
        return type(error), str(error)
    return None, ""


@settings(max_examples=examples(2.0))
@given(data=st.data())
def test_same_arguments_same_error_on_every_backend(kernel_backend, data):
    fn, args, kwargs = _case(data)
    expected, message = _outcome(fn, args, kwargs, "torch")
    assert expected in (None, ValueError, TypeError), f"the reference raised {expected.__name__}: {message}"
    got, got_message = _outcome(fn, args, kwargs, kernel_backend)
    assert got is expected, f"{kernel_backend} raised {got and got.__name__} ({got_message}); the reference {message!r}"
