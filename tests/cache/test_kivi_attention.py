"""KIVI attention on the packed cache: every backend vs the reference (dequantize, then softmax attention)."""
import pytest
import torch

from pydecode.cache import kivi_attention
from pydecode.ops.backends import cpu_isa, extension_loaded, forced_cpu_isa
from pydecode.ops.kivi.reference import dequantize_keys, dequantize_values, kivi_pack
from pydecode.ops.kivi.reference import kivi_attention as reference_attention

G = 32
# (batch, q heads, kv heads, head_dim, packed tokens, residual tokens, queries, left padding per row or None)
SHAPES = [
    pytest.param(2, 8, 2, 64, 64, 5, 1, (0, 9), id="gqa4-d64-partial-residual-padded"),
    pytest.param(1, 4, 1, 128, 32, 0, 1, None, id="mqa-d128-empty-residual"),
    pytest.param(3, 2, 2, 64, 96, 32, 1, (3, 0, 40), id="mha-full-residual-padded"),
    pytest.param(2, 4, 1, 64, 0, 7, 1, None, id="mqa-nothing-packed"),
    pytest.param(2, 4, 2, 128, 32, 9, 3, None, id="gqa-three-queries-causal"),
    pytest.param(2, 4, 2, 64, 64, 3, 2, (5, 0), id="gqa-two-queries-padded"),
    pytest.param(1, 8, 2, 64, 608, 17, 1, None, id="long-split-sequence"),
    pytest.param(2, 9, 3, 64, 128, 40, 1, (0, 70), id="gqa3-smollm2-heads-padded"),
    pytest.param(1, 10, 2, 128, 64, 12, 1, None, id="gqa5-row-block-and-one"),
    pytest.param(1, 4, 1, 256, 96, 9, 1, None, id="mqa-d256-gemma3-heads"),
    pytest.param(2, 16, 2, 64, 96, 7, 5, (0, 11), id="gqa8-five-queries-40-rows-padded"),
]


@pytest.fixture(params=["auto", "baseline"])
def isa_backend(request, backend):
    """Each backend; the cpp one twice: with the CPU's AVX2 loops where it has them, and with the portable ones."""
    if request.param == "auto":
        yield backend
        return
    if backend != "cpp":
        pytest.skip("only the cpp backend has instruction-set variants")
    with forced_cpu_isa("baseline"):
        yield backend


def _store(b, hkv, d, n_quant, n_res, nbits, dtype, device, seed=0, group=G):
    """Random packed store with spare capacity (as in a live cache) and a residual buffer."""
    g = torch.Generator().manual_seed(seed)
    cap = n_quant + 2 * group
    k = torch.randn(b, hkv, cap, d, generator=g) * 2
    v = torch.randn(b, hkv, cap, d, generator=g)
    packed = kivi_pack(k, None, nbits, group, True, torch.float32 if dtype == torch.float32 else torch.float16)
    packed += kivi_pack(v, None, nbits, group, False, packed[1].dtype)
    residual = [torch.randn(b, hkv, n_res + 4, d, generator=g).to(dtype) for _ in range(2)]
    return [t.to(device) for t in packed], [t.to(device) for t in residual]


def _padding_mask(pads, b, q_len, n, device):
    if pads is None:
        return None
    causal = torch.ones(q_len, n, dtype=torch.bool).tril(n - q_len)
    mask = causal.expand(b, q_len, n).clone()
    for row, p in enumerate(pads):
        mask[row, :, :p] = False
    return mask.to(device)


@pytest.mark.parametrize("b,hq,hkv,d,n_quant,n_res,q_len,pads", SHAPES)
@pytest.mark.parametrize("nbits", [2, 4])
def test_attention_matches_reference(isa_backend, device, b, hq, hkv, d, n_quant, n_res, q_len, pads, nbits):
    packed, (rk, rv) = _store(b, hkv, d, n_quant, n_res, nbits, torch.float32, device)
    query = torch.randn(b, hq, q_len, d, generator=torch.Generator().manual_seed(1)).to(device)
    mask = _padding_mask(pads, b, q_len, n_quant + n_res, device)
    args = (query, *packed, rk, rv, mask, n_quant, n_res, d ** -0.5, nbits, G)
    expected = reference_attention(*args)
    got = kivi_attention(*args, backend=isa_backend)
    assert got.shape == (b, hq, q_len, d) and got.dtype == query.dtype
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("group,d,n_quant,n_res", [(16, 64, 48, 13), (64, 128, 128, 37), (128, 128, 256, 5)])
@pytest.mark.parametrize("nbits", [2, 4])
def test_attention_other_group_sizes(isa_backend, device, group, d, n_quant, n_res, nbits):
    """Groups of 16, 64 and 128 tokens/channels, residual tiles of every fill, left padding."""
    packed, (rk, rv) = _store(2, 2, d, n_quant, n_res, nbits, torch.float32, device, group=group)
    query = torch.randn(2, 4, 1, d, generator=torch.Generator().manual_seed(2)).to(device)
    mask = _padding_mask((0, 21), 2, 1, n_quant + n_res, device)
    args = (query, *packed, rk, rv, mask, n_quant, n_res, d ** -0.5, nbits, group)
    torch.testing.assert_close(kivi_attention(*args, backend=isa_backend), reference_attention(*args), rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_attention_half_precision(isa_backend, device, dtype):
    b, hq, hkv, d, n_quant, n_res = 2, 8, 2, 64, 64, 11
    packed, (rk, rv) = _store(b, hkv, d, n_quant, n_res, 4, dtype, device)
    query = torch.randn(b, hq, 1, d, generator=torch.Generator().manual_seed(2)).to(device, dtype)
    mask = _padding_mask((0, 13), b, 1, n_quant + n_res, device)
    args = (query, *packed, rk, rv, mask, n_quant, n_res, d ** -0.5, 4, G)
    torch.testing.assert_close(kivi_attention(*args, backend=isa_backend).float(), reference_attention(*args).float(),
                               rtol=2e-2, atol=2e-2)


def test_reference_is_dequantize_then_sdpa():
    b, hq, hkv, d, n_quant, n_res = 2, 4, 2, 64, 64, 5
    packed, (rk, rv) = _store(b, hkv, d, n_quant, n_res, 2, torch.float32, "cpu")
    query = torch.randn(b, hq, 1, d, generator=torch.Generator().manual_seed(3))
    k = torch.cat([dequantize_keys(*packed[:3], 2, G, n_quant), rk[:, :, :n_res]], 2).repeat_interleave(2, 1)
    v = torch.cat([dequantize_values(*packed[3:], 2, G, n_quant), rv[:, :, :n_res]], 2).repeat_interleave(2, 1)
    scores = (query @ k.transpose(-1, -2)) / d ** 0.5
    expected = scores.softmax(-1) @ v
    got = reference_attention(query, *packed, rk, rv, None, n_quant, n_res, d ** -0.5, 2, G)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not extension_loaded(), reason="needs the compiled extension")
def test_empty_batch(backend, device):
    packed, (rk, rv) = _store(1, 2, 64, 64, 5, 4, torch.float32, device)
    packed, rk, rv = [t[:0] for t in packed], rk[:0], rv[:0]
    query = torch.empty(0, 4, 1, 64, device=device)
    out = kivi_attention(query, *packed, rk, rv, None, 64, 5, 64 ** -0.5, 4, G, backend=backend)
    assert out.shape == (0, 4, 1, 64)


def test_cpu_isa_switch():
    """The AVX2 loops run wherever the CPU has AVX2 and FMA, and forcing the portable ones is undone on exit."""
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    expected = "avx2" if " avx2" in flags and " fma" in flags else "baseline"
    assert cpu_isa() == expected
    with forced_cpu_isa("baseline") as isa:
        assert isa == cpu_isa() == "baseline"
        with forced_cpu_isa("auto") as inner:
            assert inner == expected
        assert cpu_isa() == "baseline"
    assert cpu_isa() == expected
    with pytest.raises(ValueError, match="isa must be"):
        with forced_cpu_isa("avx512"):
            pass
