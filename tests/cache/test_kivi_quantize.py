"""KIVI quantize + pack: exact code round trips, the half-step error bound, and every backend vs the reference."""
import pytest
import torch

from pydecode.cache import kivi_pack
from pydecode.ops.kivi.reference import dequantize_keys, dequantize_values, pack_codes, unpack_codes
from pydecode.ops.kivi.reference import kivi_pack as reference_pack


@pytest.mark.parametrize("nbits", [2, 4])
@pytest.mark.parametrize("dim", [2, 3])
def test_pack_unpack_round_trip_is_exact(nbits, dim):
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 1 << nbits, (2, 3, 32, 64), generator=g, dtype=torch.int32)
    words = pack_codes(codes, nbits, dim)
    assert words.dtype == torch.int32 and words.shape[dim] == codes.shape[dim] * nbits // 32
    assert torch.equal(unpack_codes(words, nbits, dim), codes)


def _step_bound(scale, n_tokens, group_size, per_channel):
    rep = scale.float().repeat_interleave(group_size, dim=2 if per_channel else 3)
    return rep[:, :, :n_tokens] / 2


@pytest.mark.parametrize("nbits", [2, 4])
@pytest.mark.parametrize("meta_dtype", [torch.float32, torch.float16])
def test_dequantization_error_within_half_a_step(nbits, meta_dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 64, 64, generator=g) * 3 + 1
    kc, ks, kz = reference_pack(x, None, nbits, 32, True, meta_dtype)
    vc, vs, vz = reference_pack(x, None, nbits, 32, False, meta_dtype)
    k = dequantize_keys(kc, ks, kz, nbits, 32, 64)
    v = dequantize_values(vc, vs, vz, nbits, 32, 64)
    slack = 1e-5 if meta_dtype == torch.float32 else 5e-3  # fp16 zero points round the grid itself
    assert ((k - x).abs() <= _step_bound(ks, 64, 32, True) + slack).all()
    assert ((v - x).abs() <= _step_bound(vs, 64, 32, False) + slack).all()
    levels = (1 << nbits) - 1
    expected = (x.reshape(2, 2, 2, 32, 64).amax(3) - x.reshape(2, 2, 2, 32, 64).amin(3)) / levels
    torch.testing.assert_close(ks.float(), expected, rtol=1e-3, atol=1e-6)


def test_padding_is_left_out_of_key_statistics():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 1, 32, 64, generator=g)
    x[0, :, :5] = 100.0  # padding keys with a huge range
    valid = torch.ones(2, 32, dtype=torch.bool)
    valid[0, :5] = False
    _, scale, zero = reference_pack(x, valid, 4, 32, True, torch.float32)
    real = x[0, 0, 5:]
    torch.testing.assert_close(zero[0, 0, 0], real.amin(0))
    torch.testing.assert_close(scale[0, 0, 0], (real.amax(0) - real.amin(0)) / 15)


@pytest.mark.parametrize("nbits", [2, 4])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("meta_dtype", [torch.float32, torch.float16])
def test_backend_pack_matches_reference(kernel_backend, device, nbits, per_channel, meta_dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 1, 64, 64, generator=g).to(device)
    valid = torch.ones(3, 64, dtype=torch.bool, device=device)
    valid[1, :7] = False
    valid[2, :40] = False  # a whole group of padding
    expected = reference_pack(x, valid if per_channel else None, nbits, 32, per_channel, meta_dtype)
    got = kivi_pack(x, valid, nbits, 32, per_channel, meta_dtype, backend=kernel_backend)
    for e, o in zip(expected, got):
        assert o.dtype == e.dtype and o.shape == e.shape
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=0)
    torch.testing.assert_close(got[2], expected[2], rtol=0, atol=0)
    codes_e = unpack_codes(expected[0], nbits, 2 if per_channel else 3)
    codes_o = unpack_codes(got[0], nbits, 2 if per_channel else 3)
    # bit-identical arithmetic on CPU; CUDA's fast-math division may flip a rare tie by one code
    off = (codes_e - codes_o).abs()
    assert off.max() <= 1 and off.float().mean() < (1e-3 if device == "cuda" else 1e-12)
