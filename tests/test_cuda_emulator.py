"""The CUDA emulator that runs the CUDA kernels' tests on the CPU: warp shuffles, votes and barriers compute what a
GPU computes, and the misuse a GPU punishes (divergent barriers, bad shuffle masks, too much shared memory, reading
shared memory no thread wrote) shows up as an error or a wrong result."""
import ctypes
import itertools
import shutil
import subprocess

import pytest

from tests.support import cuda_emulation

KERNELS = r"""
#include <cuda_runtime.h>
#include <stdexcept>
#include <string>

__global__ void shuffles(int* out, int n) {
  const int lane = threadIdx.x % 32;
  const unsigned mask = blockDim.x % 32 && threadIdx.x / 32 == blockDim.x / 32 ? (1u << (blockDim.x % 32)) - 1u
                                                                                : 0xFFFFFFFFu;
  out[0 * n + threadIdx.x] = __shfl_down_sync(mask, 100 + lane, 3);
  out[1 * n + threadIdx.x] = __shfl_up_sync(mask, 100 + lane, 2);
  out[2 * n + threadIdx.x] = __shfl_xor_sync(mask, 100 + lane, 5);
  out[3 * n + threadIdx.x] = __shfl_sync(mask, 100 + lane, 4);
  out[4 * n + threadIdx.x] = static_cast<int>(__ballot_sync(mask, lane % 3 == 0));
  out[5 * n + threadIdx.x] = __syncthreads_or(threadIdx.x == 40);
}

__global__ void block_sum(const float* x, float* out) {
  __shared__ float partial[256];
  partial[threadIdx.x] = x[blockIdx.x * 256 + threadIdx.x];
  __syncthreads();
  for (int half = 128; half > 0; half >>= 1) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

__global__ void neighbour(int* out, bool with_barrier) {
  __shared__ int value[64];
  value[threadIdx.x] = threadIdx.x;
  if (with_barrier) __syncthreads();
  out[threadIdx.x] = value[(threadIdx.x + 1) % 64];
}

__global__ void early_return_then_barrier(int* out) {
  if (threadIdx.x >= 16) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_with_missing_lanes(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_down_sync(0xFFFFFFFFu, 1, 1);
}

__global__ void too_much_shared(int* out) {
  __shared__ float big[13000];
  big[threadIdx.x] = 1.0f;
  out[threadIdx.x] = static_cast<int>(big[threadIdx.x]);
}

// Each entry point returns null, or the launch's error message.
template <typename F>
const char* guarded(F f) {
  static std::string message;
  try {
    const cudaError_t status = f();
    if (status == cudaSuccess) return nullptr;
    message = cudaGetErrorString(status);
  } catch (const std::exception& e) {
    message = e.what();
  }
  return message.c_str();
}

extern "C" {
const char* run_shuffles(int* out, int n) {
  return guarded([&] { shuffles<<<1, n>>>(out, n); return cudaGetLastError(); });
}
const char* run_block_sum(const float* x, float* out, int blocks) {
  return guarded([&] { block_sum<<<blocks, 256>>>(x, out); return cudaGetLastError(); });
}
const char* run_neighbour(int* out, bool with_barrier) {
  return guarded([&] { neighbour<<<1, 64>>>(out, with_barrier); return cudaGetLastError(); });
}
const char* run_early_return(int* out) {
  return guarded([&] { early_return_then_barrier<<<1, 32>>>(out); return cudaGetLastError(); });
}
const char* run_missing_lanes(int* out) {
  return guarded([&] { shuffle_with_missing_lanes<<<1, 32>>>(out); return cudaGetLastError(); });
}
const char* run_too_much_shared(int* out) {
  return guarded([&] { too_much_shared<<<1, 32>>>(out); return cudaGetLastError(); });
}
const char* run_empty_grid(int* out) {
  return guarded([&] { shuffles<<<0, 32>>>(out, 32); return cudaGetLastError(); });
}
}
"""


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    if not cuda_emulation.supported("cpu") or shutil.which("g++") is None:
        pytest.skip("the emulator needs x86-64 Linux and g++")
    work = tmp_path_factory.mktemp("cuda_emu")
    source = work / "kernels.cpp"
    source.write_text(cuda_emulation.rewrite(KERNELS, itertools.count()))
    library = work / "kernels.so"
    subprocess.run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-I", str(cuda_emulation.EMULATOR / "include"),
                    str(source), str(cuda_emulation.EMULATOR / "runtime.cpp"), "-o", str(library)], check=True)
    lib = ctypes.CDLL(str(library))
    for name in ("run_shuffles", "run_block_sum", "run_neighbour", "run_early_return", "run_missing_lanes",
                 "run_too_much_shared", "run_empty_grid"):
        getattr(lib, name).restype = ctypes.c_char_p
    return lib


def _ints(n):
    return (ctypes.c_int * n)()


def test_shuffles_votes_and_barriers_compute_what_a_gpu_does(emu):
    n = 64
    out = _ints(6 * n)
    assert emu.run_shuffles(out, n) is None
    rows = [list(out[i * n:(i + 1) * n]) for i in range(6)]
    for t in range(n):
        lane = t % 32
        assert rows[0][t] == 100 + (lane + 3 if lane + 3 < 32 else lane)  # down: own value past the warp's end
        assert rows[1][t] == 100 + (lane - 2 if lane >= 2 else lane)
        assert rows[2][t] == 100 + (lane ^ 5)
        assert rows[3][t] == 104
        assert rows[4][t] == sum(1 << bit for bit in range(32) if bit % 3 == 0)
        assert rows[5][t] == 1


def test_a_shuffle_reading_a_lane_outside_its_mask_is_an_error(emu):
    # 48 threads: the second warp has 16 lanes (mask 0xFFFF); shfl_down by 3 from lanes 13-15 reads lanes 16-18
    error = emu.run_shuffles(_ints(6 * 48), 48)
    assert error is not None and b"outside the mask" in error


def test_block_reduction_over_many_blocks(emu):
    blocks = 5
    x = (ctypes.c_float * (256 * blocks))(*[float((i * 7) % 13) for i in range(256 * blocks)])
    out = (ctypes.c_float * blocks)()
    assert emu.run_block_sum(x, out, blocks) is None
    for b in range(blocks):
        assert out[b] == sum(float((i * 7) % 13) for i in range(256 * b, 256 * (b + 1)))


def test_a_missing_barrier_reads_garbage(emu):
    out = _ints(64)
    assert emu.run_neighbour(out, True) is None
    assert list(out) == [(t + 1) % 64 for t in range(64)]
    assert emu.run_neighbour(out, False) is None
    assert list(out) != [(t + 1) % 64 for t in range(64)]  # shared memory starts as 0xFF bytes, not zeros


@pytest.mark.parametrize("entry,message", [
    ("run_early_return", "returned"),
    ("run_missing_lanes", "deadlock"),
    ("run_too_much_shared", "48 KiB"),
    ("run_empty_grid", "invalid configuration"),
])
def test_misuse_is_an_error(emu, entry, message):
    error = getattr(emu, entry)(_ints(64))
    assert error is not None and message in error.decode()
