// CUDA adapters of top_k_top_p_sample and top_k_top_p_sample_logprobs (one kernel, logprobs optional): check
// tensors, dispatch the dtype, take the stream, call kernel.cuh.
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

SampleOutputs sample(const at::Tensor& logits, const std::optional<at::Tensor>& temperature, double temperature_val,
                     const std::optional<at::Tensor>& top_k, int64_t top_k_val, const std::optional<at::Tensor>& top_p,
                     double top_p_val, const std::optional<at::Tensor>& min_p, double min_p_val,
                     const at::Tensor& seeds, int64_t step, bool with_logprobs) {
  TORCH_CHECK(logits.size(1) < (int64_t{1} << 23), "the CUDA sampler needs vocab < 2^23");
  const c10::cuda::CUDAGuard guard(logits.device());
  const SampleArgs a = sample_args(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p,
                                   min_p_val, seeds, step);
  SampleOutputs out(a.logits, with_logprobs);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_logits<__half, __nv_bfloat16>(a.logits, [&](auto ptr) {
    check_launch(sample_cuda(ptr, out.batch(), a.logits.size(1), a.params, out.tokens.data_ptr<int64_t>(),
                             out.logprob_data(), out.processed_logprob_data(), stream));
  });
  return out;
}

at::Tensor top_k_top_p_sample(const at::Tensor& logits, const std::optional<at::Tensor>& temperature,
                              double temperature_val, const std::optional<at::Tensor>& top_k, int64_t top_k_val,
                              const std::optional<at::Tensor>& top_p, double top_p_val,
                              const std::optional<at::Tensor>& min_p, double min_p_val, const at::Tensor& seeds,
                              int64_t step) {
  return sample(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p, min_p_val, seeds,
                step, false).tokens;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> top_k_top_p_sample_logprobs(
    const at::Tensor& logits, const std::optional<at::Tensor>& temperature, double temperature_val,
    const std::optional<at::Tensor>& top_k, int64_t top_k_val, const std::optional<at::Tensor>& top_p,
    double top_p_val, const std::optional<at::Tensor>& min_p, double min_p_val, const at::Tensor& seeds,
    int64_t step) {
  const SampleOutputs out = sample(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p,
                                   min_p_val, seeds, step, true);
  return {out.tokens, out.logprob, out.processed_logprob};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) {
  m.impl("top_k_top_p_sample", &top_k_top_p_sample);
  m.impl("top_k_top_p_sample_logprobs", &top_k_top_p_sample_logprobs);
}

}  // namespace pydecode
