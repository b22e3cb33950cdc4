// Beam top-k on CUDA: framework-free kernels on raw pointers + a stream
// (contract: pydecode/ops/beam_topk/reference.py).
//
// Candidates travel as 64-bit keys (radix::value_index_key: order-preserving float bits, then the complement of the
// index): a larger key is a better candidate, and equal scores put the smaller index first; 0 pads. Stage 1, one
// block per row: pass 1 reads the row once for its max / sum of exp (the log-sum-exp) and the histogram of the keys'
// top 11 bits; a radix select on the keys (every key distinct: it always ends) narrows down, a pass per digit, to
// the bin holding the KP-th largest key until that bin and those above hold at most radix::kGatherMax keys, which one
// more pass gathers into shared memory and sorts: usually 2 passes over the row. Stage 2, one block per batch item:
// every row's KP keys are rescored with the row's offset and merged (max(best[i], tile[KM - 1 - i]) holds the top KM
// of two sorted lists). Nothing sorts the vocabulary.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "pydecode/common.h"
#include "pydecode/radix_select.cuh"

namespace pydecode {

constexpr int kBeamThreads = 256;
constexpr int kBeamTile = radix::kGatherMax;  // the largest KP / KM supported

// best (km keys, sorted) <- the top km of best and tile (both sorted), sorted again.
__device__ inline void beam_merge(unsigned long long* best, const unsigned long long* tile, int km) {
  for (int i = threadIdx.x; i < km; i += blockDim.x) {
    const unsigned long long other = tile[km - 1 - i];
    if (other > best[i]) best[i] = other;
  }
  __syncthreads();
  radix::sort_desc(best, km);
}

__global__ void beam_row_topk_kernel(const float* __restrict__ logits, int64_t vocab, int kp,
                                     unsigned long long* __restrict__ row_keys, float* __restrict__ row_stats) {
  __shared__ radix::State select;
  __shared__ unsigned long long keys[radix::kGatherMax];
  __shared__ int gathered;
  __shared__ float red_m[kBeamThreads], red_s[kBeamThreads];
  const int64_t row = blockIdx.x;
  const float* x = logits + row * vocab;
  const float neg_inf = -INFINITY;
  const auto key_of = [&](int64_t t) {
    const float v = x[t];
    return radix::value_index_key(v != v ? neg_inf : v, static_cast<uint32_t>(t));
  };
  radix::clear(select, 0);
  float m = neg_inf, s = 0.0f;
  for (int64_t t = threadIdx.x; t < vocab; t += blockDim.x) {
    const unsigned long long key = key_of(t);
    const float v = radix::key_value(key);
    if (v > m) {
      s = (m == neg_inf ? 0.0f : s * expf(m - v)) + 1.0f;
      m = v;
    } else if (v != neg_inf) {
      s += expf(v - m);
    }
    radix::count<unsigned long long>(select, {key, 1ull}, 0, 0ull);
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
  const int take = kp < vocab ? kp : static_cast<int>(vocab);
  const auto entry = [&](int64_t t) { return radix::Entry<unsigned long long>{key_of(t), 1ull}; };
  unsigned long long prefix = 0;
  for (int level = 0;; ++level) {
    if (level > 0) radix::count_level<unsigned long long>(vocab, entry, level, prefix, select);
    radix::find_bin(select, level, static_cast<double>(take), false);
    prefix = (prefix << radix::digit_width<unsigned long long>(level)) | select.bin;
    if (select.above + select.hist[select.bin] <= radix::kGatherMax) {  // the last level always ends here
      const int shift = radix::digit_shift<unsigned long long>(level);
      radix::gather(vocab, key_of, [&](unsigned long long key) { return (key >> shift) >= prefix; }, keys, gathered);
      break;
    }
    __syncthreads();  // the histogram was read above; the next level clears it
  }
  for (int i = threadIdx.x; i < kp; i += blockDim.x) row_keys[row * kp + i] = i < gathered ? keys[i] : 0ull;
  if (threadIdx.x == 0) {
    row_stats[2 * row] = red_m[0];
    row_stats[2 * row + 1] = logf(red_s[0]);
  }
}

__global__ void beam_merge_kernel(const unsigned long long* __restrict__ row_keys, const float* __restrict__ row_stats,
                                  const float* __restrict__ beam_scores, int64_t vocab, int64_t num_beams, int kp,
                                  int km, int64_t k, bool log_softmax, float* __restrict__ out_scores,
                                  int64_t* __restrict__ out_tokens, int64_t* __restrict__ out_beams) {
  __shared__ unsigned long long tile[kBeamTile];
  __shared__ unsigned long long best[kBeamTile];
  const int64_t item = blockIdx.x;
  for (int i = threadIdx.x; i < km; i += blockDim.x) best[i] = 0;
  for (int64_t j = 0; j < num_beams; ++j) {
    const int64_t row = item * num_beams + j;
    for (int i = threadIdx.x; i < km; i += blockDim.x) {
      unsigned long long key = i < kp ? row_keys[row * kp + i] : 0ull;
      if (key != 0) {
        const uint32_t token = radix::key_index(key);
        float v = radix::key_value(key);
        if (log_softmax) v = (v - row_stats[2 * row]) - row_stats[2 * row + 1];
        v = v + beam_scores[row];
        v = (v != v) ? -INFINITY : v + 0.0f;
        key = radix::value_index_key(v, static_cast<uint32_t>(j * vocab + token));
      }
      tile[i] = key;
    }
    __syncthreads();
    radix::sort_desc(tile, km);
    beam_merge(best, tile, km);
  }
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    const uint32_t flat = radix::key_index(best[i]);
    out_scores[item * k + i] = radix::key_value(best[i]);
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
  if (batch == 0) return cudaSuccess;  // an empty grid is a launch error
  beam_row_topk_kernel<<<static_cast<unsigned>(batch * num_beams), kBeamThreads, 0, stream>>>(
      logits, vocab, kp, reinterpret_cast<unsigned long long*>(row_keys), row_stats);
  beam_merge_kernel<<<static_cast<unsigned>(batch), kBeamThreads, 0, stream>>>(
      reinterpret_cast<const unsigned long long*>(row_keys), row_stats, beam_scores, vocab, num_beams, kp, km, k,
      log_softmax, out_scores, out_tokens, out_beams);
  return cudaGetLastError();
}

}  // namespace pydecode
