// CPU adapter of the decode_linear op: check tensors, split the weight rows over the intra-op threads, call
// decode_linear/kernel.h (float32: its AVX2 + FMA variant where the CPU has it; bfloat16: its AVX-512 BF16 variant;
// cpu_features.h), add the bias in float32 and round once to the input's dtype.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>

#include "kernel.h"

namespace pydecode {
namespace {

template <linear::Isa ISA, typename T>
void all_rows(const T* x, int64_t M, const T* w, int64_t K, float* y, int64_t N) {
  const int64_t blocks = (N + linear::kRowBlock - 1) / linear::kRowBlock;
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * linear::kRowBlock, last = std::min(end * linear::kRowBlock, N);
    linear::weight_rows<ISA>(x, M, w, K, y, N, first, last);
  });
}

at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const auto dtype = x.scalar_type();
  TORCH_CHECK(x.dim() == 2 && (dtype == at::kFloat || dtype == at::kBFloat16),
              "x must be float32 or bfloat16 of shape (M, K)");
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == dtype && weight.size(1) == x.size(1),
              "weight must be ", dtype, " of shape (N, ", x.size(1), ")");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const bool with_bias = bias.has_value() && bias->defined();
  if (with_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N && bias->scalar_type() == dtype,
                "bias must be ", dtype, " of shape (", N, ")");
  }
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor y = at::empty({M, N}, x.options().dtype(at::kFloat));
  if (M == 0 || N == 0) return y.to(dtype);
  float* yp = y.data_ptr<float>();
  if (dtype == at::kFloat) {
    const float* xp = xc.const_data_ptr<float>();
    const float* wp = wc.const_data_ptr<float>();
    if (use_avx2()) {
      all_rows<linear::Isa::kAvx2>(xp, M, wp, K, yp, N);
    } else {
      all_rows<linear::Isa::kPortable>(xp, M, wp, K, yp, N);
    }
  } else {
    const auto* xp = reinterpret_cast<const uint16_t*>(xc.const_data_ptr<at::BFloat16>());
    const auto* wp = reinterpret_cast<const uint16_t*>(wc.const_data_ptr<at::BFloat16>());
    if (use_avx512_bf16()) {
      all_rows<linear::Isa::kAvx512Bf16>(xp, M, wp, K, yp, N);
    } else {
      all_rows<linear::Isa::kPortable>(xp, M, wp, K, yp, N);
    }
  }
  if (with_bias) y.add_(*bias);
  return dtype == at::kFloat ? y : y.to(dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) { m.impl("decode_linear", &decode_linear); }

}  // namespace pydecode
