// The ATen side of token_logprobs, shared by the CPU and CUDA adapters.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <tuple>

#include "pydecode/tensor_checks.h"

namespace pydecode {

// Outputs of token_logprobs: (chosen (B,), top values (B, n), top ids (B, n)) with n = min(top_n, vocab).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> logprob_outputs(const at::Tensor& logits,
                                                                      const at::Tensor& tokens, int64_t top_n) {
  check_logits(logits);
  check_rows(logits, tokens, "tokens");
  TORCH_CHECK(top_n >= 0, "top_n must be >= 0, got ", top_n);
  const int64_t batch = logits.size(0), n = std::min(top_n, logits.size(1));
  const auto f32 = logits.options().dtype(at::kFloat);
  return {at::empty({batch}, f32), at::empty({batch, n}, f32), at::empty({batch, n}, f32.dtype(at::kLong))};
}

}  // namespace pydecode
