// CPU adapter of the degeneration_score op: check tensors, dispatch the dtype, call degeneration_score/kernel.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.h"

namespace pydecode {
namespace {

std::tuple<at::Tensor, at::Tensor> degeneration_score(const at::Tensor& candidates, const at::Tensor& context,
                                                      const std::optional<at::Tensor>& mask, const at::Tensor& probs,
                                                      const std::optional<at::Tensor>& alpha, double alpha_val,
                                                      bool normalize_context) {
  const DegenerationArgs a = degeneration_args(candidates, context, mask, probs, alpha);
  at::Tensor scores = at::empty({a.batch, a.k}, a.probs.options());
  at::Tensor best = at::empty({a.batch}, a.probs.options().dtype(at::kLong));
  auto call = [&](auto* type_tag) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(type_tag)>>;
    degeneration_score_cpu(reinterpret_cast<const T*>(a.candidates.const_data_ptr()),
                           reinterpret_cast<const T*>(a.context.const_data_ptr()), a.mask_ptr,
                           a.probs.const_data_ptr<float>(), a.alpha_ptr, static_cast<float>(alpha_val), a.batch, a.k,
                           a.seq, a.hidden, a.context.stride(0), a.mask_stride, normalize_context,
                           scores.data_ptr<float>(), best.data_ptr<int64_t>());
  };
  switch (a.candidates.scalar_type()) {
    case at::kFloat: call(static_cast<float*>(nullptr)); break;
    case at::kHalf: call(static_cast<Half*>(nullptr)); break;
    case at::kBFloat16: call(static_cast<BFloat16*>(nullptr)); break;
    default: TORCH_CHECK(false, "hidden states must be float32, float16 or bfloat16, got ", a.candidates.scalar_type());
  }
  return {best, scores};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) { m.impl("degeneration_score", &degeneration_score); }

}  // namespace pydecode
