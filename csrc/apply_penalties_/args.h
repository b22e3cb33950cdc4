// The ATen side of apply_penalties_, shared by the CPU and CUDA adapters.
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "pydecode/tensor_checks.h"

namespace pydecode {

// The penalties' inputs, checked: logits are modified in place, so they must already be contiguous float32.
struct PenaltyArgs {
  at::Tensor counts, prompt_mask, repetition, frequency, presence;
};

inline PenaltyArgs penalty_args(const at::Tensor& logits, const at::Tensor& counts,
                                const std::optional<at::Tensor>& prompt_mask,
                                const std::optional<at::Tensor>& repetition, const std::optional<at::Tensor>& frequency,
                                const std::optional<at::Tensor>& presence) {
  check_logits(logits, /*float32_only=*/true);
  TORCH_CHECK(logits.is_contiguous(), "logits must be contiguous (penalties are applied in place)");
  TORCH_CHECK(counts.sizes() == logits.sizes() && counts.scalar_type() == at::kInt &&
                  counts.device() == logits.device(),
              "token_counts must be int32 of shape ", logits.sizes(), " on ", logits.device());
  PenaltyArgs a;
  a.counts = counts.contiguous();
  if (prompt_mask.has_value() && prompt_mask->defined()) {
    TORCH_CHECK(prompt_mask->sizes() == logits.sizes() && prompt_mask->scalar_type() == at::kBool &&
                prompt_mask->device() == logits.device(), "prompt_mask must be bool of shape ", logits.sizes());
    a.prompt_mask = prompt_mask->contiguous();
  }
  a.repetition = row_array(repetition, at::kFloat, logits, "repetition");
  a.frequency = row_array(frequency, at::kFloat, logits, "frequency");
  a.presence = row_array(presence, at::kFloat, logits, "presence");
  return a;
}

}  // namespace pydecode
