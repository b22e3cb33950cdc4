// CUDA kernel of record_tokens_ (the token counts the penalties read): raw pointers + stream, returning
// cudaError_t; no torch types. The ATen adapter is cuda.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace pydecode {
namespace cuda_detail {

__global__ void record_kernel(int32_t* counts, const int64_t* tokens, int64_t batch, int64_t vocab) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b < batch && tokens[b] >= 0 && tokens[b] < vocab) counts[b * vocab + tokens[b]] += 1;
}

}  // namespace cuda_detail

// counts[b, tokens[b]] += 1; tokens outside [0, vocab) are ignored.
inline cudaError_t record_cuda(int32_t* counts, const int64_t* tokens, int64_t batch, int64_t vocab,
                               cudaStream_t stream) {
  if (batch == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((batch + 255) / 256);
  cuda_detail::record_kernel<<<blocks, 256, 0, stream>>>(counts, tokens, batch, vocab);
  return cudaGetLastError();
}

}  // namespace pydecode
