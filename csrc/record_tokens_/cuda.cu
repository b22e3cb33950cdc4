// CUDA adapter of record_tokens_: check tensors, take the stream, call kernel.cuh.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.cuh"

namespace pydecode {
namespace {

void check_launch(cudaError_t status) {
  TORCH_CHECK(status == cudaSuccess, "CUDA launch failed: ", cudaGetErrorString(status));
}

void record_tokens_(at::Tensor& counts, const at::Tensor& tokens) {
  check_counts(counts, tokens);
  const c10::cuda::CUDAGuard guard(counts.device());
  const at::Tensor tok = tokens.to(at::kLong).contiguous();
  check_launch(record_cuda(counts.data_ptr<int32_t>(), tok.const_data_ptr<int64_t>(), counts.size(0),
                           counts.size(1), c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) {
  m.impl("record_tokens_", &record_tokens_);
}

}  // namespace pydecode
