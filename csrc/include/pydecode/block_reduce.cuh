// Block-wide pieces of the one-block-per-row CUDA kernels (top_k_top_p_sample, token_logprobs): the block size,
// logits loads with NaN as -inf, deterministic argmax / sum reductions and the row's log-softmax normaliser.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace pydecode {
namespace cuda_detail {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

template <typename T>
__device__ __forceinline__ float sanitized(const T* row, int64_t i) {
  const float x = load(row, i);
  return isnan(x) ? -INFINITY : x;
}

struct ArgMax {
  float value;
  int64_t index;
};

// Larger value wins; equal values go to the lower index (torch.argmax's first maximum). NaN never enters.
__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

// Block-wide argmax; every thread gets the result. `shared` holds kWarps entries.
__device__ inline ArgMax block_argmax(ArgMax a, ArgMax* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    ArgMax other{__shfl_down_sync(0xFFFFFFFFu, a.value, offset), __shfl_down_sync(0xFFFFFFFFu, a.index, offset)};
    a = better(a, other);
  }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = a;
  __syncthreads();
  ArgMax result = shared[0];
  for (int w = 1; w < kWarps; ++w) result = better(result, shared[w]);
  return result;
}

// Block-wide float sum in a fixed order (deterministic); every thread gets the result.
__device__ inline float block_sum(float v, float* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xFFFFFFFFu, v, offset);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w) total += shared[w];
  return total;
}

struct LogNormalizer {
  float max, log_z;  // log_softmax(x)[i] = (x[i] - max) - log_z
};

// The sanitized row's log-softmax normaliser; every thread gets it (NaN log_z when nothing is finite or one is +inf).
template <typename T>
__device__ LogNormalizer block_log_normalizer(const T* row, int64_t vocab, ArgMax* reduce, float* sums) {
  ArgMax best{-INFINITY, vocab};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) best = better(best, ArgMax{sanitized(row, i), i});
  const float row_max = block_argmax(best, reduce).value;
  float partial = 0.0f;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) partial += expf(sanitized(row, i) - row_max);
  return {row_max, logf(block_sum(partial, sums))};
}

}  // namespace cuda_detail
}  // namespace pydecode
