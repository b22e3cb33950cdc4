// CUDA adapter of the degeneration_score op: check tensors, dispatch the dtype, take the stream, call
// degeneration_score/kernel.cuh.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.cuh"

namespace pydecode {
namespace {

std::tuple<at::Tensor, at::Tensor> degeneration_score(const at::Tensor& candidates, const at::Tensor& context,
                                                      const std::optional<at::Tensor>& mask, const at::Tensor& probs,
                                                      const std::optional<at::Tensor>& alpha, double alpha_val,
                                                      bool normalize_context) {
  TORCH_CHECK(candidates.dim() != 3 || candidates.size(2) <= degeneration_detail::kMaxHidden,
              "the CUDA degeneration_score needs hidden <= ", degeneration_detail::kMaxHidden, ", got ",
              candidates.sizes());
  const c10::cuda::CUDAGuard guard(candidates.device());
  const DegenerationArgs a = degeneration_args(candidates, context, mask, probs, alpha);
  at::Tensor partial = at::empty({a.batch, degeneration_chunks(a.seq), a.k}, a.probs.options());
  at::Tensor scores = at::empty({a.batch, a.k}, a.probs.options());
  at::Tensor best = at::empty({a.batch}, a.probs.options().dtype(at::kLong));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto call = [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    const cudaError_t status = degeneration_score_cuda(
        reinterpret_cast<const T*>(a.candidates.const_data_ptr()),
        reinterpret_cast<const T*>(a.context.const_data_ptr()), a.mask_ptr, a.probs.const_data_ptr<float>(),
        a.alpha_ptr, static_cast<float>(alpha_val), a.batch, a.k, a.seq, a.hidden, a.context.stride(0),
        a.mask_stride, normalize_context, partial.data_ptr<float>(), scores.data_ptr<float>(),
        best.data_ptr<int64_t>(), stream);
    TORCH_CHECK(status == cudaSuccess, "CUDA launch failed: ", cudaGetErrorString(status));
  };
  switch (a.candidates.scalar_type()) {
    case at::kFloat: call(static_cast<float*>(nullptr)); break;
    case at::kHalf: call(static_cast<__half*>(nullptr)); break;
    case at::kBFloat16: call(static_cast<__nv_bfloat16*>(nullptr)); break;
    default: TORCH_CHECK(false, "hidden states must be float32, float16 or bfloat16, got ", a.candidates.scalar_type());
  }
  return {best, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) { m.impl("degeneration_score", &degeneration_score); }

}  // namespace pydecode
