// CUDA adapter of apply_penalties_: check tensors, take the stream, call kernel.cuh.
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

void apply_penalties_(at::Tensor& logits, const at::Tensor& counts, const std::optional<at::Tensor>& prompt_mask,
                      const std::optional<at::Tensor>& repetition, double repetition_val,
                      const std::optional<at::Tensor>& frequency, double frequency_val,
                      const std::optional<at::Tensor>& presence, double presence_val) {
  const c10::cuda::CUDAGuard guard(logits.device());
  const PenaltyArgs a = penalty_args(logits, counts, prompt_mask, repetition, frequency, presence);
  check_launch(penalties_cuda(logits.data_ptr<float>(), a.counts.const_data_ptr<int32_t>(),
                              data_or_null<bool>(a.prompt_mask), logits.size(0), logits.size(1),
                              data_or_null<float>(a.repetition), static_cast<float>(repetition_val),
                              data_or_null<float>(a.frequency), static_cast<float>(frequency_val),
                              data_or_null<float>(a.presence), static_cast<float>(presence_val),
                              c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) {
  m.impl("apply_penalties_", &apply_penalties_);
}

}  // namespace pydecode
