// Tensor checks shared by the CPU and CUDA adapters of the degeneration_score op.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace pydecode {

// The op's inputs, checked; candidates and probs contiguous, context with contiguous rows (its batch stride is
// free, so a view of a longer buffer needs no copy), the mask with contiguous rows.
struct DegenerationArgs {
  at::Tensor candidates, context, probs, mask, alpha;
  int64_t batch, k, seq, hidden, mask_stride;
  const bool* mask_ptr;
  const float* alpha_ptr;
};

inline DegenerationArgs degeneration_args(const at::Tensor& candidates, const at::Tensor& context,
                                          const std::optional<at::Tensor>& mask, const at::Tensor& probs,
                                          const std::optional<at::Tensor>& alpha) {
  TORCH_CHECK(candidates.dim() == 3 && context.dim() == 3, "candidates must be (B, K, H) and context (B, S, H)");
  DegenerationArgs a;
  a.batch = candidates.size(0);
  a.k = candidates.size(1);
  a.hidden = candidates.size(2);
  a.seq = context.size(1);
  TORCH_CHECK(context.size(0) == a.batch && context.size(2) == a.hidden, "context must be (", a.batch, ", S, ",
              a.hidden, "), got ", context.sizes());
  TORCH_CHECK(context.scalar_type() == candidates.scalar_type(), "candidates and context must share a dtype");
  TORCH_CHECK(probs.sizes() == at::IntArrayRef({a.batch, a.k}) && probs.scalar_type() == at::kFloat,
              "probs must be float32 of shape (", a.batch, ", ", a.k, ")");
  a.candidates = candidates.contiguous();
  a.probs = probs.contiguous();
  const bool rows_ok = context.stride(2) == 1 && (a.seq <= 1 || context.stride(1) == a.hidden);
  a.context = rows_ok ? context : context.contiguous();
  if (mask.has_value() && mask->defined()) {
    TORCH_CHECK(mask->sizes() == at::IntArrayRef({a.batch, a.seq}) && mask->scalar_type() == at::kBool,
                "context_mask must be bool of shape (", a.batch, ", ", a.seq, ")");
    a.mask = mask->stride(1) == 1 ? *mask : mask->contiguous();
  }
  if (alpha.has_value() && alpha->defined()) {
    TORCH_CHECK(alpha->dim() == 1 && alpha->size(0) == a.batch, "alpha must have shape (", a.batch, ",)");
    a.alpha = alpha->to(at::kFloat).contiguous();
  }
  a.mask_ptr = a.mask.defined() ? a.mask.const_data_ptr<bool>() : nullptr;
  a.mask_stride = a.mask.defined() ? a.mask.stride(0) : 0;
  a.alpha_ptr = a.alpha.defined() ? a.alpha.const_data_ptr<float>() : nullptr;
  return a;
}

}  // namespace pydecode
