// CUDA adapter of the degeneration_score op: check tensors, dispatch the dtype, take the stream, call
// pydecode/contrastive.cuh.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "pydecode/contrastive.cuh"

namespace pydecode {
namespace {

std::tuple<at::Tensor, at::Tensor> degeneration_score(const at::Tensor& candidates_in, const at::Tensor& context_in,
                                                      const std::optional<at::Tensor>& mask_in,
                                                      const at::Tensor& probs_in,
                                                      const std::optional<at::Tensor>& alpha_in, double alpha_val,
                                                      bool normalize_context) {
  TORCH_CHECK(candidates_in.dim() == 3 && context_in.dim() == 3, "candidates must be (B, K, H) and context (B, S, H)");
  const int64_t batch = candidates_in.size(0), k = candidates_in.size(1), hidden = candidates_in.size(2);
  const int64_t seq = context_in.size(1);
  TORCH_CHECK(context_in.size(0) == batch && context_in.size(2) == hidden, "context must be (", batch, ", S, ",
              hidden, "), got ", context_in.sizes());
  TORCH_CHECK(context_in.scalar_type() == candidates_in.scalar_type(), "candidates and context must share a dtype");
  TORCH_CHECK(probs_in.sizes() == at::IntArrayRef({batch, k}) && probs_in.scalar_type() == at::kFloat,
              "probs must be float32 of shape (", batch, ", ", k, ")");
  TORCH_CHECK(hidden <= 12288, "the CUDA degeneration_score needs hidden <= 12288, got ", hidden);
  const c10::cuda::CUDAGuard guard(candidates_in.device());
  const at::Tensor candidates = candidates_in.contiguous(), probs = probs_in.contiguous();
  const bool rows_ok = context_in.stride(2) == 1 && (seq <= 1 || context_in.stride(1) == hidden);
  const at::Tensor context = rows_ok ? context_in : context_in.contiguous();
  at::Tensor mask;
  if (mask_in.has_value() && mask_in->defined()) {
    TORCH_CHECK(mask_in->sizes() == at::IntArrayRef({batch, seq}) && mask_in->scalar_type() == at::kBool,
                "context_mask must be bool of shape (", batch, ", ", seq, ")");
    mask = mask_in->stride(1) == 1 ? *mask_in : mask_in->contiguous();
  }
  at::Tensor alpha;
  if (alpha_in.has_value() && alpha_in->defined()) {
    TORCH_CHECK(alpha_in->dim() == 1 && alpha_in->size(0) == batch, "alpha must have shape (", batch, ",)");
    alpha = alpha_in->to(at::kFloat).contiguous();
  }
  at::Tensor partial = at::empty({batch, degeneration_chunks(seq), k}, probs.options());
  at::Tensor scores = at::empty({batch, k}, probs.options());
  at::Tensor best = at::empty({batch}, probs.options().dtype(at::kLong));
  const bool* mask_ptr = mask.defined() ? mask.const_data_ptr<bool>() : nullptr;
  const int64_t mask_stride = mask.defined() ? mask.stride(0) : 0;
  const float* alpha_ptr = alpha.defined() ? alpha.const_data_ptr<float>() : nullptr;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  auto call = [&](auto* type_tag) {
    using T = std::remove_pointer_t<decltype(type_tag)>;
    const cudaError_t status = degeneration_score_cuda(
        reinterpret_cast<const T*>(candidates.const_data_ptr()), reinterpret_cast<const T*>(context.const_data_ptr()),
        mask_ptr, probs.const_data_ptr<float>(), alpha_ptr, static_cast<float>(alpha_val), batch, k, seq, hidden,
        context.stride(0), mask_stride, normalize_context, partial.data_ptr<float>(), scores.data_ptr<float>(),
        best.data_ptr<int64_t>(), stream);
    TORCH_CHECK(status == cudaSuccess, "CUDA launch failed: ", cudaGetErrorString(status));
  };
  switch (candidates.scalar_type()) {
    case at::kFloat: call(static_cast<float*>(nullptr)); break;
    case at::kHalf: call(static_cast<__half*>(nullptr)); break;
    case at::kBFloat16: call(static_cast<__nv_bfloat16*>(nullptr)); break;
    default: TORCH_CHECK(false, "hidden states must be float32, float16 or bfloat16, got ", candidates.scalar_type());
  }
  return {best, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) { m.impl("degeneration_score", &degeneration_score); }

}  // namespace pydecode
