"""Least-error range clipping of KIVI keys: it never loses to plain min/max, wins on spikes, and ignores padding."""
import pytest
import torch

from pydecode.cache.key_clipping import clip_key_groups
from pydecode.ops.kivi.reference import dequantize_keys, kivi_pack


def _group_error(x, clipped, nbits, valid=None):
    """Squared error per (group, channel) of quantizing `clipped`, measured against the original `x`."""
    codes, scale, zero = kivi_pack(clipped, valid, nbits, 32, True, torch.float32)
    error = (dequantize_keys(codes, scale, zero, nbits, 32, x.shape[2]) - x).square()
    if valid is not None:
        error = error * valid[:, None, :, None]
    b, h, t, d = x.shape
    return error.reshape(b, h, t // 32, 32, d).sum(3)


@pytest.mark.parametrize("nbits", [2, 4])
def test_clipping_never_increases_the_error(nbits):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 16, generator=g) * torch.rand(16, generator=g) * 4
    clipped = clip_key_groups(x, None, nbits, 32)
    plain, best = _group_error(x, x, nbits), _group_error(x, clipped, nbits)
    assert clipped.dtype == x.dtype and (best <= plain * (1 + 1e-5) + 1e-6).all()
    assert best.sum() < 0.95 * plain.sum()  # min/max is rarely the best range of Gaussian groups


def test_a_spiking_token_is_clipped_at_two_bits():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 16, generator=g)
    x[:, :, 5, :4] += 12.0  # one token spikes in four channels
    clipped = clip_key_groups(x, None, 2, 32)
    plain, best = _group_error(x, x, 2), _group_error(x, clipped, 2)
    assert (clipped[:, :, 5, :4] < x[:, :, 5, :4]).all()
    assert best[..., :4].sum() < 0.7 * plain[..., :4].sum()


def test_values_on_the_grid_keep_their_range():
    levels = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]).repeat(8)  # exactly the four 2-bit codes of [-1, 1]
    x = levels.reshape(1, 1, 32, 1).expand(1, 1, 32, 8).contiguous()
    assert torch.equal(clip_key_groups(x, None, 2, 32), x)


def test_padding_is_left_out_of_the_search():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 32, 8, generator=g)
    valid = torch.ones(2, 32, dtype=torch.bool)
    valid[1, :6] = False
    padded = x.clone()
    padded[1, :, :6] = 1e4  # huge padding keys must not move the range of the real ones
    got = clip_key_groups(padded, valid, 2, 32)
    torch.testing.assert_close(got[:, :, 6:], clip_key_groups(x, valid, 2, 32)[:, :, 6:])
    every_pad = torch.zeros(2, 32, dtype=torch.bool)
    assert torch.isfinite(clip_key_groups(padded, every_pad, 2, 32)).all()
