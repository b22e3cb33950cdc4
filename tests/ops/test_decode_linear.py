"""decode_linear (a decoding step's few-row float32 CPU linear) against F.linear: awkward shapes on both CPU
instruction sets, and bad arguments."""
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pydecode.ops.backends import active_backends, forced_cpu_isa
from pydecode.ops.linear import decode_linear
from pydecode.ops.reference import decode_linear as reference

needs_cpp = pytest.mark.skipif("cpp" not in active_backends("cpu"), reason="needs the C++ extension")


def _check(rows: int, width: int, outputs: int, with_bias: bool, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=g)
    weight = torch.randn(outputs, width, generator=g)
    bias = torch.randn(outputs, generator=g) if with_bias else None
    got = decode_linear(x, weight, bias, backend="cpp")
    # float32 sums in another order: the error grows like sqrt(K) times the size of the terms (~1 here)
    torch.testing.assert_close(got, reference(x, weight, bias), rtol=1e-5, atol=2e-6 * width ** 0.5 + 1e-6)


@needs_cpp
@pytest.mark.parametrize("isa", ["auto", "baseline"])
@given(rows=st.sampled_from([0, 1, 2, 3, 4, 7, 16, 33, 65]), width=st.integers(1, 300),
       outputs=st.integers(0, 23), with_bias=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_matches_the_reference(isa, rows, width, outputs, with_bias, seed):
    """Row counts around the 3-row tiles, widths off the 8-lane vectors, weight rows off the 4-row blocks."""
    with forced_cpu_isa(isa):
        _check(rows, width, outputs, with_bias, seed)


@needs_cpp
@pytest.mark.parametrize("rows, width, outputs", [(1, 576, 49152), (16, 1536, 576), (5, 4096, 37)])
def test_model_shapes(rows, width, outputs):
    """SmolLM2's head and MLP shapes: many row blocks split over the threads."""
    _check(rows, width, outputs, True, rows)


@needs_cpp
def test_strided_inputs_are_read_as_their_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 6, generator=g).t()  # (6, 20), not contiguous
    weight = torch.randn(20, 9, generator=g).t()
    torch.testing.assert_close(decode_linear(x, weight, backend="cpp"), reference(x, weight), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args, error, named", [
    ((torch.ones(2, 3, dtype=torch.float16), torch.ones(4, 3)), TypeError, "x must be a 2-D float32"),
    ((torch.ones(3), torch.ones(4, 3)), TypeError, "x must be a 2-D float32"),
    ((torch.ones(2, 3), [[1.0, 2.0, 3.0]]), TypeError, "weight must be a 2-D float32"),
    ((torch.ones(2, 3), torch.ones(4, 5)), ValueError, r"weight must have shape \(N, 3\)"),
    ((torch.ones(2, 3), torch.ones(4, 3), torch.ones(5)), ValueError, r"bias must have shape \(4,\)"),
    ((torch.ones(2, 3), torch.ones(4, 3), torch.ones(4, 1)), TypeError, "bias must be a 1-D float32"),
    ((torch.ones(2, 3), torch.ones(4, 3, device="meta")), ValueError, "one device"),
])
def test_bad_arguments_name_the_parameter(args, error, named):
    with pytest.raises(error, match=named):
        decode_linear(*args)
