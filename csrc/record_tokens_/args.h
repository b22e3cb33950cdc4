// The ATen side of record_tokens_, shared by the CPU and CUDA adapters.
#pragma once
#include <ATen/ATen.h>

#include "pydecode/tensor_checks.h"

namespace pydecode {

inline void check_counts(const at::Tensor& counts, const at::Tensor& tokens) {
  TORCH_CHECK(counts.dim() == 2 && counts.scalar_type() == at::kInt && counts.is_contiguous(),
              "token_counts must be a contiguous int32 tensor of shape (batch, vocab)");
  check_rows(counts, tokens, "tokens");
}

}  // namespace pydecode
