"""decode_linear (a decoding step's few-row float32 / bfloat16 CPU linear) against the reference: awkward shapes on
every CPU instruction set, and bad arguments."""
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from pydecode.ops.backends import active_backends, forced_cpu_isa
from pydecode.ops.linear import decode_linear
from pydecode.ops.reference import decode_linear as reference

needs_cpp = pytest.mark.skipif("cpp" not in active_backends("cpu"), reason="needs the C++ extension")


def _check(rows: int, width: int, outputs: int, with_bias: bool, seed: int, dtype=torch.float32) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, width, generator=g).to(dtype)
    weight = torch.randn(outputs, width, generator=g).to(dtype)
    bias = torch.randn(outputs, generator=g).to(dtype) if with_bias else None
    got = decode_linear(x, weight, bias, backend="cpp")
    want = reference(x, weight, bias)
    assert got.dtype == dtype and got.shape == want.shape
    # float32 sums in another order: the error grows like sqrt(K) times the size of the terms (~1 here); bfloat16
    # outputs are then rounded once, so a sum on a rounding boundary may land one bfloat16 step (<= 2^-7 of it) away
    atol = 2e-6 * width ** 0.5 + 1e-6
    rtol = 1e-5 if dtype == torch.float32 else 2 ** -7
    torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=atol)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("isa", ["auto", "baseline"])
@given(rows=st.sampled_from([0, 1, 2, 3, 4, 7, 16, 33, 65]), width=st.integers(1, 300),
       outputs=st.integers(0, 23), with_bias=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_matches_the_reference(dtype, isa, rows, width, outputs, with_bias, seed):
    """Row counts around the 3-row tiles, widths off the 8- and 32-lane vectors, weight rows off the 4-row blocks
    (bfloat16 on the AVX-512 BF16 kernel where this CPU has it, else on the portable loops as with the baseline)."""
    with forced_cpu_isa(isa):
        _check(rows, width, outputs, with_bias, seed, dtype)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows, width, outputs", [(1, 576, 49152), (16, 1536, 576), (5, 4096, 37)])
def test_model_shapes(rows, width, outputs, dtype):
    """SmolLM2's head and MLP shapes: many row blocks split over the threads."""
    _check(rows, width, outputs, True, rows, dtype)


@needs_cpp
def test_strided_inputs_are_read_as_their_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 6, generator=g).t()  # (6, 20), not contiguous
    weight = torch.randn(20, 9, generator=g).t()
    torch.testing.assert_close(decode_linear(x, weight, backend="cpp"), reference(x, weight), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("args, error, named", [
    ((torch.ones(2, 3, dtype=torch.float16), torch.ones(4, 3)), TypeError, "x must be a 2-D float32 or bfloat16"),
    ((torch.ones(3), torch.ones(4, 3)), TypeError, "x must be a 2-D float32 or bfloat16"),
    ((torch.ones(2, 3), torch.ones(4, 3, dtype=torch.bfloat16)), TypeError, "weight must be a 2-D float32"),
    ((torch.ones(2, 3), [[1.0, 2.0, 3.0]]), TypeError, "weight must be a 2-D float32"),
    ((torch.ones(2, 3), torch.ones(4, 5)), ValueError, r"weight must have shape \(N, 3\)"),
    ((torch.ones(2, 3), torch.ones(4, 3), torch.ones(5)), ValueError, r"bias must have shape \(4,\)"),
    ((torch.ones(2, 3), torch.ones(4, 3), torch.ones(4, 1)), TypeError, "bias must be a 1-D float32"),
    ((torch.ones(2, 3), torch.ones(4, 3, device="meta")), ValueError, "one device"),
])
def test_bad_arguments_name_the_parameter(args, error, named):
    with pytest.raises(error, match=named):
        decode_linear(*args)


@needs_cpp
def test_bfloat16_dot_products_where_the_cpu_has_them():
    """The bfloat16 kernel runs AVX-512 BF16 exactly where the CPU has it, and the baseline switch turns it off."""
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    expected = {"avx512f", "avx512bw", "avx512_bf16"} <= flags
    assert torch.ops.pydecode.bf16_dot_products() == expected
    with forced_cpu_isa("baseline"):
        assert not torch.ops.pydecode.bf16_dot_products()
