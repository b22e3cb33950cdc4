// CUDA speculative verification: a template on raw pointers + stream, returning cudaError_t; no torch types.
// Semantics bit for bit those of verify/kernel.h (CPU) and pydecode/ops/verify/reference.py; the ATen adapter is
// csrc/verify/cuda.cu. Inputs are float32 processed logits, row-major: target (B, K + 1, V), draft (B, K, V) or null
// (one-hot drafts, as prompt lookup gives).
//
// One block per row; each position is a strided pass over the vocabulary with block-wide reductions. The rounding
// matches verify/kernel.h under --use_fast_math: exp and log are evaluated in double and rounded to float (a correctly
// rounded expf / logf in effect, as glibc's are), the probability's division is __fdiv_rn, softmax sums accumulate
// in double as on the CPU, and the residual's mass is only tested for being positive (any entry > 0).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "pydecode/common.h"

namespace pydecode {
namespace verify_cuda_detail {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

struct Best {
  float value;
  int64_t index;
};

// Larger value wins, equal values go to the lower index (the CPU loops' first maximum); NaN never wins.
__device__ __forceinline__ Best better(Best a, Best b) {
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

struct Shared {
  Best best[kWarps];
  double sum[kWarps];
};

// Block-wide argmax; every thread gets the result.
__device__ __forceinline__ Best block_argmax(Best a, Shared& s) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    a = better(a, Best{__shfl_down_sync(0xFFFFFFFFu, a.value, offset),
                       __shfl_down_sync(0xFFFFFFFFu, a.index, offset)});
  }
  __syncthreads();  // s may still be read by the previous call
  if (threadIdx.x % 32 == 0) s.best[threadIdx.x / 32] = a;
  __syncthreads();
  Best result = s.best[0];
  for (int w = 1; w < kWarps; ++w) result = better(result, s.best[w]);
  return result;
}

// Block-wide double sum; every thread gets the result.
__device__ __forceinline__ double block_sum(double v, Shared& s) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xFFFFFFFFu, v, offset);
  __syncthreads();
  if (threadIdx.x % 32 == 0) s.sum[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0.0;
  for (int w = 0; w < kWarps; ++w) total += s.sum[w];
  return total;
}

__device__ __forceinline__ float exp_rn(float x) { return static_cast<float>(exp(static_cast<double>(x))); }
__device__ __forceinline__ float log_rn(float x) { return static_cast<float>(log(static_cast<double>(x))); }

// First index of the row's maximum (NaN skipped; 0 when nothing beats -inf), as verify/kernel.h's argmax.
template <typename T>
__device__ int64_t row_argmax(const T* x, int64_t vocab, Shared& s) {
  Best best{-INFINITY, 0};
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) best = better(best, Best{load(x, v), v});
  return block_argmax(best, s).index;
}

// p(v) = exp(x[v] - max) / sum; NaN logits count as -inf.
struct Softmax {
  float max, sum;
  template <typename T>
  __device__ float prob(const T* x, int64_t v) const {
    const float xv = load(x, v);
    return isnan(xv) ? 0.0f : __fdiv_rn(exp_rn(__fsub_rn(xv, max)), sum);
  }
};

template <typename T>
__device__ Softmax row_softmax(const T* x, int64_t vocab, Shared& s) {
  Best best{-INFINITY, 0};
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) best = better(best, Best{load(x, v), v});
  const float max = block_argmax(best, s).value;
  double total = 0.0;
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) {
    const float xv = load(x, v);
    total += isnan(xv) ? 0.0 : static_cast<double>(exp_rn(__fsub_rn(xv, max)));
  }
  return Softmax{max, static_cast<float>(block_sum(total, s))};
}

// argmax_v score(v) + gumbel(v) over the stream words of the row key (first index on ties; 0 when no score > -inf).
template <typename Score>
__device__ int64_t gumbel_argmax(uint32_t key, int64_t vocab, Score score, Shared& s) {
  Best draw{-INFINITY, 0};
  for (int64_t v = threadIdx.x; v < vocab; v += kThreads) {
    const float x = score(v);
    if (!(x > -INFINITY)) continue;
    if (x + kGumbelMax < draw.value) continue;  // cannot win: its random bits need not be computed
    draw = better(draw, Best{__fadd_rn(x, gumbel_from_bits(token_bits(key, static_cast<uint32_t>(v)))), v});
  }
  return block_argmax(draw, s).index;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) verify_kernel(const int64_t* draft_tokens, const T* draft_logits,
                                                          const T* target_logits, const int64_t* num_draft,
                                                          const float* temperature, float temperature_val,
                                                          const int64_t* seeds, int64_t step, int64_t k,
                                                          int64_t vocab, int64_t* accepted, int64_t* next_tokens) {
  __shared__ Shared s;
  const int64_t b = blockIdx.x;
  const int64_t* tokens = draft_tokens + b * k;
  const T* draft = draft_logits ? draft_logits + b * k * vocab : nullptr;
  const T* target = target_logits + b * (k + 1) * vocab;
  const int64_t n = num_draft[b];
  const bool greedy = row_param(temperature, temperature_val, b) <= 0.0f;
  const uint32_t key = step_key(seeds[b], step);

  int64_t a = 0;
  for (; a < n; ++a) {  // every thread takes the same branches: the decisions come from block-wide results
    const T* t = target + a * vocab;
    const int64_t x = tokens[a];
    bool ok;
    if (greedy) {
      ok = row_argmax(t, vocab, s) == x;
    } else {
      const float p = row_softmax(t, vocab, s).prob(t, x);
      const T* d = draft ? draft + a * vocab : nullptr;
      const float q = d ? row_softmax(d, vocab, s).prob(d, x) : 1.0f;
      ok = __fmul_rn(uniform_from_bits(token_bits(key, static_cast<uint32_t>(vocab + a))), q) < p;
    }
    if (!ok) break;
  }

  const T* t = target + a * vocab;
  int64_t next;
  if (greedy) {
    next = row_argmax(t, vocab, s);
  } else if (a == n) {  // every draft accepted: the bonus token, exactly the sampler's draw
    auto logit = [&](int64_t v) {
      const float x = load(t, v);
      return isnan(x) ? -INFINITY : x;
    };
    next = gumbel_argmax(key, vocab, logit, s);
  } else {  // rejected: draw from max(p - q, 0), or p where that has no mass
    const Softmax ps = row_softmax(t, vocab, s);
    const T* d = draft ? draft + a * vocab : nullptr;
    const Softmax qs = d ? row_softmax(d, vocab, s) : Softmax{-INFINITY, 0.0f};
    const int64_t x = tokens[a];
    auto residual = [&](int64_t v) {
      const float q = d ? qs.prob(d, v) : (v == x ? 1.0f : 0.0f);
      const float r = __fsub_rn(ps.prob(t, v), q);
      return r > 0.0f ? r : 0.0f;
    };
    int positive = 0;
    for (int64_t v = threadIdx.x; v < vocab && !positive; v += kThreads) positive = residual(v) > 0.0f;
    if (__syncthreads_or(positive)) {
      next = gumbel_argmax(key, vocab, [&](int64_t v) { return log_rn(residual(v)); }, s);
    } else {
      next = gumbel_argmax(key, vocab, [&](int64_t v) { return log_rn(ps.prob(t, v)); }, s);
    }
  }
  if (threadIdx.x == 0) {
    accepted[b] = a;
    next_tokens[b] = next;
  }
}

}  // namespace verify_cuda_detail

// accepted / next_tokens: (B,) outputs. num_draft: (B,) in [0, K]. temperature: (B,) or null (then temperature_val);
// <= 0 is a greedy row. seeds (B,) and step select the sampler's random stream. Needs V + K < 2^32. T is float,
// __half or __nv_bfloat16 (the op itself takes float32, as the CPU kernel).
template <typename T>
cudaError_t verify_cuda(const int64_t* draft_tokens, const T* draft_logits, const T* target_logits,
                               const int64_t* num_draft, const float* temperature, float temperature_val,
                               const int64_t* seeds, int64_t step, int64_t batch, int64_t k, int64_t vocab,
                               int64_t* accepted, int64_t* next_tokens, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  verify_cuda_detail::verify_kernel<T><<<static_cast<unsigned>(batch), verify_cuda_detail::kThreads, 0, stream>>>(
      draft_tokens, draft_logits, target_logits, num_draft, temperature, temperature_val, seeds, step, k, vocab,
      accepted, next_tokens);
  return cudaGetLastError();
}

}  // namespace pydecode
