// CUDA adapter of the verify op: check tensors, take the stream, call verify/kernel.cuh.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.cuh"

namespace pydecode {
namespace {

template <typename T>
const T* data_or_null(const at::Tensor& t) { return t.defined() ? t.const_data_ptr<T>() : nullptr; }

std::tuple<at::Tensor, at::Tensor> verify(const at::Tensor& draft_tokens, const std::optional<at::Tensor>& draft_logits,
                                          const at::Tensor& target_logits, const at::Tensor& num_draft,
                                          const std::optional<at::Tensor>& temperature, double temperature_val,
                                          const at::Tensor& seeds, int64_t step) {
  const VerifyArgs a = verify_args(draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds);
  const c10::cuda::CUDAGuard guard(a.target_logits.device());
  at::Tensor accepted = at::empty({a.batch}, a.num_draft.options());
  at::Tensor next_tokens = at::empty({a.batch}, a.num_draft.options());
  const cudaError_t status = verify_cuda(
      a.draft_tokens.const_data_ptr<int64_t>(), data_or_null<float>(a.draft_logits),
      a.target_logits.const_data_ptr<float>(), a.num_draft.const_data_ptr<int64_t>(),
      data_or_null<float>(a.temperature), static_cast<float>(temperature_val), a.seeds.const_data_ptr<int64_t>(), step,
      a.batch, a.k, a.vocab, accepted.data_ptr<int64_t>(), next_tokens.data_ptr<int64_t>(),
      c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, "CUDA launch failed: ", cudaGetErrorString(status));
  return {accepted, next_tokens};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) { m.impl("verify", &verify); }

}  // namespace pydecode
