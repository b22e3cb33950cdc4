// CUDA kernel of token_logprobs: a template on raw pointers + stream, returning cudaError_t; no torch types.
// Semantics are those of pydecode/ops/logprobs/reference.py; the ATen adapter is cuda.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "pydecode/block_reduce.cuh"

namespace pydecode {
namespace cuda_detail {

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
