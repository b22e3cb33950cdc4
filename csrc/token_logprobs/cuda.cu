// CUDA adapter of token_logprobs: check tensors, dispatch the dtype, take the stream, call kernel.cuh.
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> token_logprobs(const at::Tensor& logits_in, const at::Tensor& tokens,
                                                              int64_t top_n) {
  at::Tensor chosen, values, ids;  // not a structured binding: lambdas capture those only from C++20
  std::tie(chosen, values, ids) = logprob_outputs(logits_in, tokens, top_n);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous(), tok = tokens.to(at::kLong).contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_logits<__half, __nv_bfloat16>(logits, [&](auto ptr) {
    check_launch(logprobs_cuda(ptr, tok.const_data_ptr<int64_t>(), logits.size(0), logits.size(1), values.size(1),
                               chosen.data_ptr<float>(), values.data_ptr<float>(), ids.data_ptr<int64_t>(), stream));
  });
  return {chosen, values, ids};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) {
  m.impl("token_logprobs", &token_logprobs);
}

}  // namespace pydecode
