// CUDA kernels of the sampling ops: templates on raw pointers + stream, returning cudaError_t; no torch types.
// Semantics are those of pydecode/ops/sample/reference.py; the ATen adapter is csrc/sampling/cuda.cu.
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
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "pydecode/common.h"
#include "pydecode/radix_select.cuh"

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
__device__ ArgMax block_argmax(ArgMax a, ArgMax* shared) {
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
__device__ float block_sum(float v, float* shared) {
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

// Grid (row, vocab chunk); rows without any penalty return at once.
__global__ void penalties_kernel(float* logits, const int32_t* counts, const bool* prompt_mask, int64_t vocab,
                                 const float* repetition, float repetition_val, const float* frequency,
                                 float frequency_val, const float* presence, float presence_val) {
  const int64_t b = blockIdx.y;
  const float rep = row_param(repetition, repetition_val, b);
  const float freq = row_param(frequency, frequency_val, b);
  const float pres = row_param(presence, presence_val, b);
  if (rep == 1.0f && freq == 0.0f && pres == 0.0f) return;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= vocab) return;
  const int64_t at = b * vocab + i;
  const int32_t c = counts[at];
  float v = logits[at];
  if (rep != 1.0f && (c > 0 || (prompt_mask && prompt_mask[at]))) v = v < 0.0f ? __fmul_rn(v, rep) : __fdiv_rn(v, rep);
  logits[at] = __fsub_rn(v, __fadd_rn(__fmul_rn(freq, static_cast<float>(c)), c > 0 ? pres : 0.0f));
}

__global__ void record_kernel(int32_t* counts, const int64_t* tokens, int64_t batch, int64_t vocab) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b < batch && tokens[b] >= 0 && tokens[b] < vocab) counts[b * vocab + tokens[b]] += 1;
}

// One block per row: max, sum-exp, the chosen token, then top_n rounds of "next largest after the previous".
template <typename T>
__global__ void __launch_bounds__(kThreads) logprobs_kernel(const T* logits, const int64_t* tokens, int64_t vocab,
                                                            int64_t top_n, float* chosen, float* top_values,
                                                            int64_t* top_ids) {
  __shared__ ArgMax reduce[kWarps];
  __shared__ float sums[kWarps];
  const int64_t b = blockIdx.x;
  const T* row = logits + b * vocab;
  const LogNormalizer norm = block_log_normalizer(row, vocab, reduce, sums);
  const float row_max = norm.max, log_z = norm.log_z;
  const int64_t tok = tokens[b];
  if (threadIdx.x == 0) chosen[b] = (tok >= 0 && tok < vocab) ? (sanitized(row, tok) - row_max) - log_z : NAN;
  ArgMax previous{INFINITY, -1};
  for (int64_t j = 0; j < top_n; ++j) {
    ArgMax next{-INFINITY, vocab};
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
      const float v = sanitized(row, i);
      if (v < previous.value || (v == previous.value && i > previous.index)) next = better(next, ArgMax{v, i});
    }
    next = block_argmax(next, reduce);
    if (threadIdx.x == 0) {
      top_values[b * top_n + j] = (next.value - row_max) - log_z;
      top_ids[b * top_n + j] = next.index;
    }
    previous = next;
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

// Repetition / frequency / presence penalties in place on float32 logits (batch, vocab); prompt_mask may be null.
inline cudaError_t penalties_cuda(float* logits, const int32_t* counts, const bool* prompt_mask, int64_t batch,
                                  int64_t vocab, const float* repetition, float repetition_val,
                                  const float* frequency, float frequency_val, const float* presence,
                                  float presence_val, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  constexpr int kBlock = 256;
  const dim3 grid(static_cast<unsigned>((vocab + kBlock - 1) / kBlock), static_cast<unsigned>(batch));
  cuda_detail::penalties_kernel<<<grid, kBlock, 0, stream>>>(logits, counts, prompt_mask, vocab, repetition,
                                                             repetition_val, frequency, frequency_val, presence,
                                                             presence_val);
  return cudaGetLastError();
}

// counts[b, tokens[b]] += 1; tokens outside [0, vocab) are ignored.
inline cudaError_t record_cuda(int32_t* counts, const int64_t* tokens, int64_t batch, int64_t vocab,
                               cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((batch + 255) / 256);
  cuda_detail::record_kernel<<<blocks, 256, 0, stream>>>(counts, tokens, batch, vocab);
  return cudaGetLastError();
}

// chosen[b] = log_softmax(logits[b])[tokens[b]]; top_values / top_ids (batch, top_n), descending, ties to lower id.
template <typename T>
cudaError_t logprobs_cuda(const T* logits, const int64_t* tokens, int64_t batch, int64_t vocab, int64_t top_n,
                          float* chosen, float* top_values, int64_t* top_ids, cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  cuda_detail::logprobs_kernel<T><<<static_cast<unsigned>(batch), cuda_detail::kThreads, 0, stream>>>(
      logits, tokens, vocab, top_n, chosen, top_values, top_ids);
  return cudaGetLastError();
}

}  // namespace pydecode
