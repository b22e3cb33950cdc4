// CUDA kernel of apply_penalties_ on raw pointers + stream, returning cudaError_t; no torch types. Semantics are
// those of pydecode/ops/penalties/reference.py; the ATen adapter is cuda.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "pydecode/common.h"

namespace pydecode {
namespace cuda_detail {

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

}  // namespace cuda_detail

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

}  // namespace pydecode
