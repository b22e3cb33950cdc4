"""The counter-based random stream of ``pydecode.ops.random``, as Triton device functions.

Bit-identical to the reference: uint32 lowbias32 hashes of (seed, step, token), and the same float32 rounding of the
uniform ``((bits >> 9) + 0.5) * 2**-23`` and of the Gumbel noise ``-log(-log(u))``.
"""
import triton
import triton.language as tl

from ._jit import device_function


@device_function
def mix32(x):
    """lowbias32 hash of uint32 values (products wrap mod 2**32)."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@device_function
def step_key(seed_ptr, row, step):
    """The row's uint32 key for ``step``: seeds are int64, ``step`` an int32 holding the low 32 bits of the step."""
    seed = tl.load(seed_ptr + row).to(tl.int64)
    lo = (seed & 0xFFFFFFFF).to(tl.uint32)
    hi = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    row_key = mix32(mix32(hi ^ 0x9E3779B9) ^ lo)
    return mix32(row_key ^ mix32(step.to(tl.uint32, bitcast=True) ^ 0x85EBCA6B))


@device_function
def token_bits(key, tokens):
    """uint32 stream words of ``tokens`` (int32, >= 0) under the row key."""
    return mix32(key ^ mix32(tokens.to(tl.uint32) ^ 0xC2B2AE35))


@device_function
def gumbel(key, tokens):
    """float32 standard Gumbel noise of ``tokens`` under the row key."""
    u = ((token_bits(key, tokens) >> 9).to(tl.float32) + 0.5) * 1.1920928955078125e-07  # 2**-23
    return -tl.log(-tl.log(u))


@triton.jit
def _random_bits_kernel(seed_ptr, out_ptr, step, V, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    key = step_key(seed_ptr, row, step)
    for start in range(0, V, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        tl.store(out_ptr + row.to(tl.int64) * V + offs, token_bits(key, offs).to(tl.int64), mask=offs < V)


def step_arg(step: int) -> int:
    """The low 32 bits of ``step`` as a signed int32 (one kernel signature for every step)."""
    low = int(step) & 0xFFFFFFFF
    return low - (1 << 32) if low >= 1 << 31 else low


def random_bits(seeds, step: int, vocab_size: int):
    """(B, V) int64 stream words, as ``reference.random.random_bits`` (for tests and debugging)."""
    import torch

    out = torch.empty(seeds.shape[0], vocab_size, dtype=torch.int64, device=seeds.device)
    _random_bits_kernel[(seeds.shape[0],)](seeds, out, step_arg(step), vocab_size, BLOCK=1024)
    return out
