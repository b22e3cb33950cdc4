"""The stateless counter-based random stream shared by every backend.

A draw depends only on ``(seed, step, token)``: a row's randomness never depends on batch composition, the backend
or the device. Every backend (torch, C++, CUDA, Triton) computes the same 32-bit integers:

    mix32(x)  = lowbias32 integer hash: x ^= x>>16; x *= 0x7FEB352D; x ^= x>>15; x *= 0x846CA68B; x ^= x>>16
    row_key   = mix32(mix32(seed_hi ^ 0x9E3779B9) ^ seed_lo)          seed split into two 32-bit halves
    step_key  = mix32(row_key ^ mix32(step ^ 0x85EBCA6B))
    bits(v)   = mix32(step_key ^ mix32(v ^ 0xC2B2AE35))               v = token index, all arithmetic mod 2**32
    uniform   = ((bits >> 9) + 0.5) * 2**-23                           float32 in (0, 1), never 0 or 1

(23 bits, not 24: ``2**24 - 0.5`` is not a float32 and would round ``uniform`` up to exactly 1.)
    gumbel    = -log(-log(uniform))

Sampling is Gumbel-max: ``argmax(processed_logits + gumbel)``, which draws from ``softmax(processed_logits)``.

``mix32`` is a bijection of 32-bit words, so a ``(seed, step)`` stream is also the step-0 stream of another seed
(:func:`position_seeds`): kernels that take one step for the whole batch then draw rows at different positions.
"""
from __future__ import annotations

import torch

MASK32 = 0xFFFFFFFF
MIX1 = 0x7FEB352D
MIX2 = 0x846CA68B
SEED_SALT = 0x9E3779B9
STEP_SALT = 0x85EBCA6B
TOKEN_SALT = 0xC2B2AE35
MIX1_INVERSE = pow(MIX1, -1, 1 << 32)
MIX2_INVERSE = pow(MIX2, -1, 1 << 32)


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 hash of int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * MIX1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MIX2) & MASK32  # int64 product wraps mod 2**64; the low 32 bits are exact
    return x ^ (x >> 16)


def step_keys(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """Per-row 32-bit keys (as int64) for ``step``; ``seeds`` is an int64 tensor of shape (B,)."""
    seeds = seeds.to(torch.int64)
    lo = seeds & MASK32
    hi = (seeds >> 32) & MASK32
    row_key = mix32(mix32(hi ^ SEED_SALT) ^ lo)
    step_term = mix32(torch.full_like(row_key, (int(step) & MASK32) ^ STEP_SALT))
    return mix32(row_key ^ step_term)


def random_bits(seeds: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """(B, V) int64 tensor of the stream's 32-bit words for every token of every row."""
    keys = step_keys(seeds, step)
    tokens = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)
    return mix32(keys[:, None] ^ mix32(tokens ^ TOKEN_SALT)[None, :])


def random_uniform(seeds: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """(B, V) float32 uniforms in (0, 1) for every token of every row."""
    bits = random_bits(seeds, step, vocab_size)
    return ((bits >> 9).to(torch.float32) + 0.5) * (2.0**-23)


def gumbel_noise(seeds: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """(B, V) float32 standard Gumbel noise ``-log(-log(u))``."""
    return -torch.log(-torch.log(random_uniform(seeds, step, vocab_size)))


def unmix32(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`mix32`: ``unmix32(mix32(x)) == x`` for int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * MIX2_INVERSE) & MASK32
    x = x ^ (x >> 15) ^ (x >> 30)
    x = (x * MIX1_INVERSE) & MASK32
    return x ^ (x >> 16)


def position_seeds(seeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B,) int64 seeds whose step-0 stream is the stream of ``(seeds[b], positions[b])``, on the device.

    The returned seed has a zero high half and the low half that makes its row key
    ``row_key(seed) ^ mix32(position ^ STEP_SALT) ^ mix32(STEP_SALT)``, so :func:`step_keys` at step 0 gives the
    key of ``positions[b]``."""
    seeds = seeds.to(torch.int64)
    lo, hi = seeds & MASK32, (seeds >> 32) & MASK32
    row_key = mix32(mix32(hi ^ SEED_SALT) ^ lo)
    step = positions.to(device=seeds.device, dtype=torch.int64) & MASK32
    wanted = row_key ^ mix32(step ^ STEP_SALT) ^ mix32(torch.full_like(step, STEP_SALT))
    zero_hi_key = mix32(torch.full_like(step, SEED_SALT))  # mix32(0 ^ SEED_SALT)
    return unmix32(wanted) ^ zero_hi_key
