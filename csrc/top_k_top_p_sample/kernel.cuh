// CUDA kernel of top_k_top_p_sample (and top_k_top_p_sample_logprobs): a template on raw pointers + stream,
// returning cudaError_t; no torch types. Semantics are those of pydecode/ops/sample/reference.py; the ATen
// adapter is cuda.cu.
//
// sample: one block per row, each pass a strided loop over the row with block-wide reductions (the row stays in L2):
//   1. max and argmax of x = sanitize(logit) / temperature (greedy rows stop here);
//   2. top-k: exact k-th largest value by radix select on order-preserving keys, 3 passes (11/11/10-bit digit
//      histograms in shared memory, each counting only the entries under the prefix chosen so far);
//   3. top-p: the same radix select with mass histograms (exp(x - M) as 40-bit fixed point: integer atomics keep the
//      sums order-independent, so the result is deterministic), over the entries top-k kept, 3 passes;
//   4. draw: Gumbel-max over the kept entries; min-p and the logs only for entries that can still win;
//   With top-k on, pass 1 also counts the keys' top digits (radix level 0). When the bin of the k-th largest key and
//   the bins above hold at most radix::kGatherMax (1024) entries (the usual case), pass 2 gathers them into shared
//   memory and sorts them; top-k, top-p, min-p, the draw and the kept mass then read only that list (the same
//   fixed-point sums give the same pivot, the same noise the same draw): 2 passes over the row instead of 8.
//   Otherwise the radix select goes on in the row (levels 1 and 2), and top-p may still run on the gathered list
//   when top-k kept few.
//   5. only when asked for: the drawn token's logprob and processed logprob (two more passes: the kept entries'
//      mass, and the input row's log-sum-exp).
// Top-p ties at the pivot value are all kept. Temperature uses __fdiv_rn so --use_fast_math keeps it exact.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "pydecode/block_reduce.cuh"
#include "pydecode/common.h"
#include "pydecode/radix_select.cuh"

namespace pydecode {
namespace cuda_detail {

// Largest value tau with weight(value >= tau) >= target, over i in [0, n) (weight(i) == 0 excludes an entry).
// relative: target is a fraction of the total weight. Returns -inf when the total falls short (keep all).
// first_level > 0 continues a select whose earlier levels chose `prefix` (and left s.above, s.target).
template <typename Value, typename Weight>
__device__ float block_threshold(int64_t n, Value value, Weight weight, double target, bool relative,
                                 radix::State& s, int first_level = 0, uint32_t prefix = 0) {
  const auto entry = [&](int64_t i) {
    const float v = value(i);
    return radix::Entry<uint32_t>{order_key(v), weight(i, v)};
  };
  for (int level = first_level; level < radix::levels<uint32_t>(); ++level) {
    radix::count_level<uint32_t>(n, entry, level, prefix, s);
    radix::find_bin(s, level, target, relative);
    if (!s.found) return -INFINITY;
    prefix = (prefix << radix::digit_width<uint32_t>(level)) | s.bin;
    __syncthreads();
  }
  return float_from_key(prefix);
}

// The entries top-k kept (value >= tau), as radix::value_index_key keys sorted descending: by value, then by lower
// index.
struct KeptList {
  unsigned long long keys[radix::kGatherMax];
  unsigned long long scan[kThreads];  // per-thread sums, then their inclusive scan
  int count, cut;
};

// Gathers the entries whose value passes keep(value) into `kept`, sorted; false when more than kGatherMax pass.
template <typename Value, typename Keep>
__device__ bool gather_kept(int64_t vocab, Value value, Keep keep, KeptList& kept) {
  return radix::gather(
      vocab, [&](int64_t i) { return radix::value_index_key(value(i), static_cast<uint32_t>(i)); },
      [&](unsigned long long key) { return keep(radix::key_value(key)); }, kept.keys, kept.count);
}

// Cuts the sorted list of top-k candidates (a superset of the top k) to its first k entries and every later one
// equal to the k-th (top-k keeps ties whole).
__device__ void keep_top_k(KeptList& kept, int k) {
  const float tau = radix::key_value(kept.keys[k - 1]);
  if (threadIdx.x == 0) kept.cut = k;
  __syncthreads();
  for (int at = k + threadIdx.x; at < kept.count; at += kThreads) {
    if (radix::key_value(kept.keys[at]) >= tau) atomicMax(&kept.cut, at + 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) kept.count = kept.cut;
  __syncthreads();
}

// Top-p over the sorted kept list: the same pivot as block_threshold with the same fixed-point masses (the value at
// which the mass from the top, ties included, first reaches ceil(top_p * total)); -inf when it never does.
__device__ float kept_top_p(KeptList& kept, float row_max, float top_p) {
  const int n = kept.count;
  constexpr int kPer = radix::kGatherMax / kThreads;  // consecutive entries per thread
  unsigned long long mass[kPer], mine = 0;
  for (int j = 0; j < kPer; ++j) {
    const int at = threadIdx.x * kPer + j;
    mass[j] = at < n ? static_cast<unsigned long long>(expf(radix::key_value(kept.keys[at]) - row_max) *
                                                        1099511627776.0f)
                     : 0ull;
    mine += mass[j];
  }
  kept.scan[threadIdx.x] = mine;
  __syncthreads();
  for (int offset = 1; offset < kThreads; offset <<= 1) {  // Hillis-Steele inclusive scan of the per-thread sums
    const unsigned long long add = threadIdx.x >= offset ? kept.scan[threadIdx.x - offset] : 0ull;
    __syncthreads();
    kept.scan[threadIdx.x] += add;
    __syncthreads();
  }
  const unsigned long long total = kept.scan[kThreads - 1];
  const unsigned long long goal = static_cast<unsigned long long>(ceil(static_cast<double>(top_p) *
                                                                       static_cast<double>(total)));
  if (threadIdx.x == 0) kept.cut = n;
  __syncthreads();
  unsigned long long before = kept.scan[threadIdx.x] - mine;
  for (int j = 0; j < kPer; ++j) {
    const int at = threadIdx.x * kPer + j;
    if (at < n && before < goal && before + mass[j] >= goal) atomicMin(&kept.cut, at);
    before += mass[j];
  }
  __syncthreads();
  const int cut = kept.cut;
  return cut < n ? radix::key_value(kept.keys[cut]) : -INFINITY;
}

// Steps 3-5 of sample_kernel on the kept list: top-p pivot, min-p, the Gumbel-max draw and the logprobs.
template <typename T, typename Value>
__device__ void draw_kept(KeptList& kept, const T* row, int64_t vocab, Value value, float row_max, float top_p,
                          float min_p, uint32_t key, int64_t row_index, int64_t* out, float* logprob,
                          float* processed_logprob, ArgMax* reduce, float* sums) {
  const float tau = top_p < 1.0f ? kept_top_p(kept, row_max, top_p) : -INFINITY;
  ArgMax draw{-INFINITY, vocab};
  float partial = 0.0f;  // the processed distribution's normaliser over the entries still kept
  for (int at = threadIdx.x; at < kept.count; at += kThreads) {
    const float v = radix::key_value(kept.keys[at]);
    const float e = expf(v - row_max);
    if (v < tau || (min_p > 0.0f && e < min_p)) continue;
    partial += e;
    const int64_t i = radix::key_index(kept.keys[at]);
    const float noisy = v + gumbel_from_bits(token_bits(key, static_cast<uint32_t>(i)));
    if (!isnan(noisy)) draw = better(draw, ArgMax{noisy, i});
  }
  draw = block_argmax(draw, reduce);
  if (threadIdx.x == 0) out[row_index] = draw.index;
  if (!logprob) return;
  const float kept_mass = block_sum(partial, sums);
  const LogNormalizer norm = block_log_normalizer(row, vocab, reduce, sums);
  if (threadIdx.x == 0) {
    logprob[row_index] = (sanitized(row, draw.index) - norm.max) - norm.log_z;
    processed_logprob[row_index] = (value(draw.index) - row_max) - logf(kept_mass);
  }
}

// logprob / processed_logprob: null, or (batch,) outputs for the drawn token's log-probabilities.
template <typename T>
__global__ void __launch_bounds__(kThreads) sample_kernel(const T* logits, int64_t vocab, SampleParams p,
                                                          int64_t* out, float* logprob, float* processed_logprob) {
  __shared__ radix::State select;
  __shared__ KeptList kept;
  __shared__ ArgMax reduce[kWarps];
  __shared__ float sums[kWarps];
  const int64_t row_index = blockIdx.x;
  const T* row = logits + row_index * vocab;
  const float temperature = row_param(p.temperature, p.temperature_val, row_index);
  const bool greedy = !(temperature > 0.0f);
  auto value = [&](int64_t i) {
    const float x = sanitized(row, i);
    return greedy ? x : __fdiv_rn(x, temperature);
  };

  // Pass 1: the maximum and, with top-k on, the count histogram of the keys' top digit (the select's level 0).
  const int32_t top_k = row_param(p.top_k, p.top_k_val, row_index);
  const bool top_k_on = !greedy && top_k > 0 && top_k < vocab;
  if (top_k_on) {
    radix::clear(select, 0);
  }
  ArgMax best{-INFINITY, vocab};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = value(i);
    best = better(best, ArgMax{v, i});
    if (top_k_on) radix::count<uint32_t>(select, {order_key(v), 1ull}, 0, 0u);
  }
  best = block_argmax(best, reduce);  // its barriers complete the histogram too
  const float row_max = best.value;
  if (greedy || row_max == -INFINITY || row_max == INFINITY) {
    const int64_t token = row_max == -INFINITY ? 0 : best.index;
    if (logprob) {  // greedy: one distribution; a sampling row without a finite maximum of logit / T reports the
                    // input's logprob and a NaN processed one
      const LogNormalizer norm = block_log_normalizer(row, vocab, reduce, sums);
      const float lp = (sanitized(row, token) - norm.max) - norm.log_z;
      if (threadIdx.x == 0) {
        logprob[row_index] = lp;
        processed_logprob[row_index] = greedy ? lp : NAN;
      }
    }
    if (threadIdx.x == 0) out[row_index] = token;
    return;
  }

  float tau = -INFINITY;
  const float top_p = row_param(p.top_p, p.top_p_val, row_index);
  const float min_p = row_param(p.min_p, p.min_p_val, row_index);
  const uint32_t key = step_key(p.seeds[row_index], p.step);
  if (top_k_on) {
    const auto one = [](int64_t, float) { return 1ull; };
    radix::find_bin(select, 0, static_cast<double>(top_k), false);  // the top digit of the k-th largest key
    const uint32_t bucket = select.bin;
    if (select.above + select.hist[bucket] <= radix::kGatherMax) {  // few candidates: gather, sort, cut
      const int shift = radix::digit_shift<uint32_t>(0);
      gather_kept(vocab, value, [&](float v) { return (order_key(v) >> shift) >= bucket; }, kept);
      keep_top_k(kept, top_k);
      draw_kept(kept, row, vocab, value, row_max, top_p, min_p, key, row_index, out, logprob, processed_logprob,
                reduce, sums);
      return;
    }
    __syncthreads();
    tau = block_threshold(vocab, value, one, static_cast<double>(top_k), false, select, 1, bucket);
    const auto kept_by_top_k = [&](float v) { return v >= tau; };
    if (top_k <= radix::kGatherMax && top_p < 1.0f && gather_kept(vocab, value, kept_by_top_k, kept)) {
      draw_kept(kept, row, vocab, value, row_max, top_p, min_p, key, row_index, out, logprob, processed_logprob,
                reduce, sums);
      return;
    }
  }
  if (top_p < 1.0f) {
    const float floor = tau;
    auto mass = [&](int64_t, float v) {
      // 2^40 fixed point: the sums fit in 64 bits for vocab < 2^23 (checked by the adapter)
      return v < floor ? 0ull : static_cast<unsigned long long>(expf(v - row_max) * 1099511627776.0f);
    };
    tau = fmaxf(tau, block_threshold(vocab, value, mass, static_cast<double>(top_p), true, select));
  }

  ArgMax draw{row_max + gumbel_from_bits(token_bits(key, static_cast<uint32_t>(best.index))), best.index};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = value(i);
    if (v < tau) continue;
    if (v + kGumbelMax < draw.value) continue;
    const uint32_t bits = token_bits(key, static_cast<uint32_t>(i));
    if (min_p > 0.0f && expf(v - row_max) < min_p) continue;
    const float noisy = v + gumbel_from_bits(bits);
    if (!isnan(noisy)) draw = better(draw, ArgMax{noisy, i});
  }
  draw = block_argmax(draw, reduce);
  if (threadIdx.x == 0) out[row_index] = draw.index;
  if (!logprob) return;
  float partial = 0.0f;  // the processed distribution's normaliser: exp(x - M) over the kept entries
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = value(i);
    const float e = expf(v - row_max);
    if (v >= tau && !(min_p > 0.0f && e < min_p)) partial += e;
  }
  const float kept_mass = block_sum(partial, sums);
  const LogNormalizer norm = block_log_normalizer(row, vocab, reduce, sums);
  if (threadIdx.x == 0) {
    logprob[row_index] = (sanitized(row, draw.index) - norm.max) - norm.log_z;
    processed_logprob[row_index] = (value(draw.index) - row_max) - logf(kept_mass);
  }
}

}  // namespace cuda_detail

// out[b] = the token drawn for row b of logits (batch, vocab); T is float, __half or __nv_bfloat16.
// logprob / processed_logprob (both null, or both (batch,)) receive its log-probabilities under the input and the
// processed distributions.
template <typename T>
cudaError_t sample_cuda(const T* logits, int64_t batch, int64_t vocab, const SampleParams& params, int64_t* out,
                        float* logprob, float* processed_logprob, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  cuda_detail::sample_kernel<T><<<static_cast<unsigned>(batch), cuda_detail::kThreads, 0, stream>>>(
      logits, vocab, params, out, logprob, processed_logprob);
  return cudaGetLastError();
}

}  // namespace pydecode
