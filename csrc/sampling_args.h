// Tensor checks and conversions shared by the CPU and CUDA adapters of the sampling ops.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace pydecode {

inline void check_rows(const at::Tensor& logits, const at::Tensor& other, const char* name) {
  TORCH_CHECK(other.device() == logits.device(), name, " must be on ", logits.device(), ", got ", other.device());
  TORCH_CHECK(other.dim() == 1 && other.size(0) == logits.size(0), name, " must have shape (", logits.size(0),
              ",), got ", other.sizes());
}

inline void check_logits(const at::Tensor& logits, bool float32_only = false) {
  TORCH_CHECK(logits.dim() == 2 && logits.size(1) > 0, "logits must have shape (batch, vocab), got ", logits.sizes());
  const auto dtype = logits.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || (!float32_only && (dtype == at::kHalf || dtype == at::kBFloat16)),
              "logits must be float32", float32_only ? "" : ", float16 or bfloat16", ", got ", dtype);
  TORCH_CHECK(logits.size(1) < (int64_t{1} << 31), "vocab must be below 2^31");
}

// A per-row parameter as a contiguous (B,) tensor of dtype, or an undefined tensor when given as a scalar.
inline at::Tensor row_array(const std::optional<at::Tensor>& value, at::ScalarType dtype, const at::Tensor& logits,
                            const char* name) {
  if (!value.has_value() || !value->defined()) return at::Tensor();
  check_rows(logits, *value, name);
  return value->to(dtype).contiguous();
}

// top_k as int32 in [0, vocab] (anything >= vocab, or <= 0, disables it).
inline at::Tensor top_k_array(const std::optional<at::Tensor>& value, const at::Tensor& logits) {
  if (!value.has_value() || !value->defined()) return at::Tensor();
  check_rows(logits, *value, "top_k");
  TORCH_CHECK(!at::isFloatingType(value->scalar_type()), "top_k must hold integers, got ", value->scalar_type());
  return value->clamp(0, logits.size(1)).to(at::kInt).contiguous();
}

inline int32_t top_k_scalar(int64_t value, int64_t vocab) {
  return static_cast<int32_t>(std::min(std::max<int64_t>(value, 0), vocab));
}

template <typename T>
const T* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }

}  // namespace pydecode
