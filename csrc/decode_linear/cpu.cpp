// CPU adapter of the decode_linear op: check tensors, split the weight rows over the intra-op threads, call
// decode_linear/kernel.h (its AVX2 + FMA variant where the CPU has it, cpu_features.h), add the bias.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <optional>

#include "kernel.h"

namespace pydecode {
namespace {

at::Tensor decode_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat, "x must be float32 of shape (M, K)");
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.size(1) == x.size(1),
              "weight must be float32 of shape (N, ", x.size(1), ")");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const bool with_bias = bias.has_value() && bias->defined();
  if (with_bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == N && bias->scalar_type() == at::kFloat,
                "bias must be float32 of shape (", N, ")");
  }
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  const float* xp = xc.const_data_ptr<float>();
  const float* wp = wc.const_data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const bool avx2 = use_avx2();
  const int64_t blocks = (N + linear::kRowBlock - 1) / linear::kRowBlock;
  at::parallel_for(0, blocks, 16, [&](int64_t begin, int64_t end) {
    const int64_t first = begin * linear::kRowBlock, last = std::min(end * linear::kRowBlock, N);
    if (avx2) {
      linear::weight_rows<true>(xp, M, wp, K, yp, N, first, last);
    } else {
      linear::weight_rows<false>(xp, M, wp, K, yp, N, first, last);
    }
  });
  if (with_bias) y.add_(*bias);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) { m.impl("decode_linear", &decode_linear); }

}  // namespace pydecode
