// Beam top-k on CUDA: framework-free kernels on raw pointers + a stream (contract: pydecode/ops/reference/beam.py).
//
// Candidates travel as int64 keys (order-preserving float bits << 32 | 2^32 - 1 - index): a larger key is a better
// candidate, and equal scores put the smaller index first. Stage 1, one block per row: the row is read once in
// tiles of kTile; each tile is sorted in shared memory, its best KP keys are merged into the row's running best KP
// with one bitonic step (max(best[i], tile[KP - 1 - i]) holds the top KP of both), and an online max / sum of exp
// gives the log-sum-exp. Stage 2, one block per batch item: every row's KP keys are rescored with the row's offset
// and merged the same way. No block sorts more than one tile; nothing sorts the vocabulary.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"

namespace pydecode {

constexpr int kBeamThreads = 256;
constexpr int kBeamTile = 1024;      // keys sorted at once; also the largest KP / KM supported
constexpr int64_t kBeamPad = INT64_MIN;

__device__ __forceinline__ int64_t beam_pack(float score, uint32_t index) {
  const uint32_t high = order_key(score) ^ 0x80000000u;  // signed order == float order
  return static_cast<int64_t>((static_cast<uint64_t>(high) << 32) | (0xFFFFFFFFu - index));
}

__device__ __forceinline__ float beam_unpack(int64_t key, uint32_t* index) {
  const uint64_t u = static_cast<uint64_t>(key);
  *index = 0xFFFFFFFFu - static_cast<uint32_t>(u & 0xFFFFFFFFu);
  return float_from_key(static_cast<uint32_t>(u >> 32) ^ 0x80000000u);
}

// Sort n (a power of two) keys of shared memory in descending order, with the whole block.
__device__ void beam_sort_desc(int64_t* a, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const bool descending = (i & size) == 0;
          const int64_t x = a[i], y = a[j];
          if (descending ? x < y : x > y) {
            a[i] = y;
            a[j] = x;
          }
        }
      }
      __syncthreads();
    }
  }
}

// best (kp, sorted) <- top kp of best and tile (n >= kp, sorted); then sorted again.
__device__ void beam_merge(int64_t* best, const int64_t* tile, int kp) {
  for (int i = threadIdx.x; i < kp; i += blockDim.x) {
    const int64_t other = tile[kp - 1 - i];
    if (other > best[i]) best[i] = other;
  }
  __syncthreads();
  beam_sort_desc(best, kp);
}

__global__ void beam_row_topk_kernel(const float* __restrict__ logits, int64_t vocab, int kp,
                                     int64_t* __restrict__ row_keys, float* __restrict__ row_stats) {
  __shared__ int64_t tile[kBeamTile];
  __shared__ int64_t best[kBeamTile];
  __shared__ float red_m[kBeamThreads], red_s[kBeamThreads];
  const int64_t row = blockIdx.x;
  const float* x = logits + row * vocab;
  const float neg_inf = -INFINITY;
  float m = neg_inf, s = 0.0f;
  for (int i = threadIdx.x; i < kp; i += blockDim.x) best[i] = kBeamPad;
  for (int64_t start = 0; start < vocab; start += kBeamTile) {
    for (int i = threadIdx.x; i < kBeamTile; i += blockDim.x) {
      const int64_t t = start + i;
      int64_t key = kBeamPad;
      if (t < vocab) {
        float v = x[t];
        if (v != v) v = neg_inf;
        if (v > m) {
          s = (m == neg_inf ? 0.0f : s * expf(m - v)) + 1.0f;
          m = v;
        } else if (v != neg_inf) {
          s += expf(v - m);
        }
        key = beam_pack(v, static_cast<uint32_t>(t));
      }
      tile[i] = key;
    }
    __syncthreads();
    beam_sort_desc(tile, kBeamTile);
    beam_merge(best, tile, kp);
  }
  red_m[threadIdx.x] = m;
  red_s[threadIdx.x] = s;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) {
      const float m1 = red_m[threadIdx.x], m2 = red_m[threadIdx.x + half];
      const float mm = fmaxf(m1, m2);
      float total = 0.0f;
      if (mm != neg_inf) total = red_s[threadIdx.x] * expf(m1 - mm) + red_s[threadIdx.x + half] * expf(m2 - mm);
      red_m[threadIdx.x] = mm;
      red_s[threadIdx.x] = total;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < kp; i += blockDim.x) row_keys[row * kp + i] = best[i];
  if (threadIdx.x == 0) {
    row_stats[2 * row] = red_m[0];
    row_stats[2 * row + 1] = logf(red_s[0]);
  }
}

__global__ void beam_merge_kernel(const int64_t* __restrict__ row_keys, const float* __restrict__ row_stats,
                                  const float* __restrict__ beam_scores, int64_t vocab, int64_t num_beams, int kp,
                                  int km, int64_t k, bool log_softmax, float* __restrict__ out_scores,
                                  int64_t* __restrict__ out_tokens, int64_t* __restrict__ out_beams) {
  __shared__ int64_t tile[kBeamTile];
  __shared__ int64_t best[kBeamTile];
  const int64_t item = blockIdx.x;
  for (int i = threadIdx.x; i < km; i += blockDim.x) best[i] = kBeamPad;
  for (int64_t j = 0; j < num_beams; ++j) {
    const int64_t row = item * num_beams + j;
    for (int i = threadIdx.x; i < km; i += blockDim.x) {
      int64_t key = i < kp ? row_keys[row * kp + i] : kBeamPad;
      if (key != kBeamPad) {
        uint32_t token;
        float v = beam_unpack(key, &token);
        if (log_softmax) v = (v - row_stats[2 * row]) - row_stats[2 * row + 1];
        v = v + beam_scores[row];
        v = (v != v) ? -INFINITY : v + 0.0f;
        key = beam_pack(v, static_cast<uint32_t>(j * vocab + token));
      }
      tile[i] = key;
    }
    __syncthreads();
    beam_sort_desc(tile, km);
    beam_merge(best, tile, km);
  }
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    uint32_t flat;
    out_scores[item * k + i] = beam_unpack(best[i], &flat);
    out_tokens[item * k + i] = flat % vocab;
    out_beams[item * k + i] = flat / vocab;
  }
}

inline int beam_pow2(int64_t n) {
  int p = 1;
  while (p < n) p <<= 1;
  return p;
}

// logits (batch * num_beams, vocab) float32; workspace: row_keys (rows * next_pow2(min(k, vocab))) int64 and
// row_stats (rows * 2) float32. Needs k <= kBeamTile and num_beams * vocab < 2^32.
inline cudaError_t beam_topk_cuda(const float* logits, const float* beam_scores, int64_t batch, int64_t num_beams,
                                  int64_t vocab, int64_t k, bool log_softmax, int64_t* row_keys, float* row_stats,
                                  float* out_scores, int64_t* out_tokens, int64_t* out_beams, cudaStream_t stream) {
  const int kp = beam_pow2(k < vocab ? k : vocab), km = beam_pow2(k);
  if (km > kBeamTile) return cudaErrorInvalidValue;
  beam_row_topk_kernel<<<static_cast<unsigned>(batch * num_beams), kBeamThreads, 0, stream>>>(
      logits, vocab, kp, row_keys, row_stats);
  beam_merge_kernel<<<static_cast<unsigned>(batch), kBeamThreads, 0, stream>>>(
      row_keys, row_stats, beam_scores, vocab, num_beams, kp, km, k, log_softmax, out_scores, out_tokens, out_beams);
  return cudaGetLastError();
}

}  // namespace pydecode
