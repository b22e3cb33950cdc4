// Degeneration scoring of contrastive search on CUDA: framework-free templates on raw pointers + a stream.
// Semantics of pydecode/ops/degeneration/reference.py: per row b, the candidate k maximising
//   (1 - alpha) * probs[b, k] - alpha * max_{s unmasked} cos(candidates[b, k], context[b, s])
// (penalty 0 when no context position is unmasked; the first best on ties).
//
// Kernel 1, grid (chunks of kRowsPerBlock context positions, batch): the block normalises a tile of candidates into
// shared memory (float), then each warp takes context rows, reads each element once for every candidate of the
// tile, reduces across lanes and keeps a running max; the block writes the chunk's max per candidate to `partial`.
// Kernel 2, one warp per row: max over chunks, combine with the probabilities, argmax.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace pydecode {
namespace degeneration_detail {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRowsPerBlock = 64;
constexpr int kTile = 8;                    // candidates per shared-memory tile (accumulators per lane)
// A launch gets 48 KiB of shared memory without cudaFuncSetAttribute: the statics (warp_max, inv_norm) take their
// part, the candidate tile the rest.
constexpr int kSharedBytes = 48 * 1024 - (kWarps * kTile + kTile) * static_cast<int>(sizeof(float));
constexpr int64_t kMaxHidden = kSharedBytes / sizeof(float);  // one candidate per tile

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

inline int tile_size(int64_t k, int64_t hidden) {
  int64_t tile = kSharedBytes / (hidden * static_cast<int64_t>(sizeof(float)));
  tile = tile < kTile ? tile : kTile;
  return static_cast<int>(tile < k ? tile : k);
}

template <typename T>
__global__ void partial_kernel(const T* __restrict__ candidates, const T* __restrict__ context,
                               const bool* __restrict__ mask, int64_t k, int64_t seq, int64_t hidden,
                               int64_t context_stride, int64_t mask_stride, bool normalize_context, int tile,
                               int64_t chunks, float* __restrict__ partial) {
  extern __shared__ float unit[];  // (tile, hidden) normalised candidates
  __shared__ float warp_max[kWarps][kTile];
  __shared__ float inv_norm[kTile];
  const int64_t chunk = blockIdx.x, b = blockIdx.y;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t s_begin = chunk * kRowsPerBlock;
  const int64_t s_end = s_begin + kRowsPerBlock < seq ? s_begin + kRowsPerBlock : seq;
  const T* ctx = context + b * context_stride;
  for (int64_t j0 = 0; j0 < k; j0 += tile) {
    const int n = static_cast<int>(k - j0 < tile ? k - j0 : tile);
    for (int64_t i = threadIdx.x; i < n * hidden; i += kThreads) {
      unit[i] = to_float(candidates[(b * k + j0) * hidden + i]);
    }
    __syncthreads();
    for (int j = warp; j < n; j += kWarps) {
      float sq = 0.0f;
      for (int64_t h = lane; h < hidden; h += 32) sq += unit[j * hidden + h] * unit[j * hidden + h];
      sq = warp_sum(sq);
      if (lane == 0) inv_norm[j] = 1.0f / sqrtf(sq);
    }
    __syncthreads();
    float best[kTile];
#pragma unroll
    for (int j = 0; j < kTile; ++j) best[j] = -INFINITY;
    for (int64_t s = s_begin + warp; s < s_end; s += kWarps) {
      if (mask && !mask[b * mask_stride + s]) continue;
      const T* row = ctx + s * hidden;
      float dot[kTile] = {};
      float sq = 0.0f;
      for (int64_t h = lane; h < hidden; h += 32) {
        const float x = to_float(row[h]);
        sq += x * x;
#pragma unroll
        for (int j = 0; j < kTile; ++j) {
          if (j < n) dot[j] += x * unit[j * hidden + h];
        }
      }
      const float row_scale = normalize_context ? 1.0f / sqrtf(warp_sum(sq)) : 1.0f;
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
        if (j < n) best[j] = fmaxf(best[j], warp_sum(dot[j]) * row_scale * inv_norm[j]);
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int j = 0; j < kTile; ++j) warp_max[warp][j] = best[j];
    }
    __syncthreads();
    if (threadIdx.x < n) {
      float m = -INFINITY;
      for (int w = 0; w < kWarps; ++w) m = fmaxf(m, warp_max[w][threadIdx.x]);
      partial[(b * chunks + chunk) * k + j0 + threadIdx.x] = m;
    }
    __syncthreads();
  }
}

__global__ void finish_kernel(const float* __restrict__ partial, const float* __restrict__ probs,
                              const float* __restrict__ alpha, float alpha_val, int64_t k, int64_t chunks,
                              float* __restrict__ scores, int64_t* __restrict__ best) {
  const int64_t b = blockIdx.x;
  const int lane = threadIdx.x;
  const float a = alpha ? alpha[b] : alpha_val;
  float top = -INFINITY;
  int64_t arg = k;  // k = none yet
  for (int64_t j = lane; j < k; j += 32) {
    float penalty = -INFINITY;
    for (int64_t c = 0; c < chunks; ++c) penalty = fmaxf(penalty, partial[(b * chunks + c) * k + j]);
    if (penalty == -INFINITY) penalty = 0.0f;
    const float score = (1.0f - a) * probs[b * k + j] - a * penalty;
    scores[b * k + j] = score;
    if (arg == k || score > top) top = score, arg = j;
  }
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, top, offset);
    const int64_t other_arg = __shfl_xor_sync(0xffffffffu, arg, offset);
    const bool take = other_arg != k && (arg == k || other > top || (other == top && other_arg < arg));
    top = take ? other : top;
    arg = take ? other_arg : arg;
  }
  if (lane == 0) best[b] = arg;
}

}  // namespace degeneration_detail

// Number of floats the caller allocates for `partial`: batch * degeneration_chunks(seq) * k.
inline int64_t degeneration_chunks(int64_t seq) {
  return (seq + degeneration_detail::kRowsPerBlock - 1) / degeneration_detail::kRowsPerBlock;
}

// candidates (batch, k, hidden) contiguous; context rows `hidden` apart, batch rows `context_stride` apart; mask
// (batch, seq) rows `mask_stride` apart, or null; probs (batch, k); alpha (batch,) or null (alpha_val).
// Writes scores (batch, k) and best (batch,). Needs hidden <= kMaxHidden (12216).
template <typename T>
cudaError_t degeneration_score_cuda(const T* candidates, const T* context, const bool* mask, const float* probs,
                                    const float* alpha, float alpha_val, int64_t batch, int64_t k, int64_t seq,
                                    int64_t hidden, int64_t context_stride, int64_t mask_stride,
                                    bool normalize_context, float* partial, float* scores, int64_t* best,
                                    cudaStream_t stream) {
  using namespace degeneration_detail;
  if (batch == 0) return cudaSuccess;
  const int tile = tile_size(k, hidden);
  if (tile < 1) return cudaErrorInvalidValue;
  const int64_t chunks = degeneration_chunks(seq);
  if (chunks > 0) {
    const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(batch));
    const size_t shared = static_cast<size_t>(tile) * hidden * sizeof(float);
    partial_kernel<T><<<grid, kThreads, shared, stream>>>(candidates, context, mask, k, seq, hidden, context_stride,
                                                         mask_stride, normalize_context, tile, chunks, partial);
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  finish_kernel<<<static_cast<unsigned>(batch), 32, 0, stream>>>(partial, probs, alpha, alpha_val, k, chunks, scores,
                                                                 best);
  return cudaGetLastError();
}

}  // namespace pydecode
