// Tensor checks and conversions shared by the ATen adapters (csrc/<op>/args.h, cpu.cpp, cuda.cu); the kernels
// themselves never see a torch type.
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

template <typename T>
const T* data_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; }


// Calls fn(ptr) with logits' data as const float* / const HalfT* / const BFloat16T*: the 16-bit storage types of
// the kernel templates (pydecode::Half / BFloat16 on the CPU, __half / __nv_bfloat16 on CUDA).
template <typename HalfT, typename BFloat16T, typename Fn>
void with_logits(const at::Tensor& logits, Fn&& fn) {
  switch (logits.scalar_type()) {
    case at::kFloat: return fn(logits.const_data_ptr<float>());
    case at::kHalf: return fn(reinterpret_cast<const HalfT*>(logits.const_data_ptr<at::Half>()));
    case at::kBFloat16: return fn(reinterpret_cast<const BFloat16T*>(logits.const_data_ptr<at::BFloat16>()));
    default: TORCH_CHECK(false, "unsupported logits dtype ", logits.scalar_type());
  }
}

}  // namespace pydecode
