"""The counter-based random stream: bit-exact against a pure-Python model, and uniforms strictly inside (0, 1)."""
import torch

from pydecode.ops.random import gumbel_noise, random_bits, random_uniform

M32 = 0xFFFFFFFF


def _mix(x):
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def _bits(seed, step, token):
    seed &= (1 << 64) - 1
    row = _mix(_mix((seed >> 32) ^ 0x9E3779B9) ^ (seed & M32))
    key = _mix(row ^ _mix((step & M32) ^ 0x85EBCA6B))
    return _mix(key ^ _mix(token ^ 0xC2B2AE35))


def test_bits_match_pure_python_model():
    seeds = torch.tensor([0, 1, 12345, -7, 2**40 + 3, -(2**63)])
    got = random_bits(seeds, 17, 50)
    expected = [[_bits(s, 17, v) for v in range(50)] for s in seeds.tolist()]
    assert got.tolist() == expected


def test_uniform_extremes_stay_strictly_inside_the_unit_interval():
    top = torch.tensor([M32]) >> 9
    u = (top.to(torch.float32) + 0.5) * 2.0**-23
    assert u.item() < 1.0
    u = random_uniform(torch.arange(64), 3, 4096)
    assert (u > 0).all() and (u < 1).all()
    assert torch.isfinite(gumbel_noise(torch.arange(64), 3, 4096)).all()


def test_streams_differ_by_seed_and_step_and_look_uniform():
    u = random_uniform(torch.tensor([1, 2]), 0, 20000)
    assert not torch.equal(u[0], u[1])
    assert not torch.equal(random_uniform(torch.tensor([1]), 1, 100), random_uniform(torch.tensor([1]), 2, 100))
    hist = torch.histc(u.flatten(), bins=10, min=0, max=1)
    assert (hist - 4000).abs().max() < 300  # about 5 sigma for 40000 uniforms in 10 bins
