// CPU adapter of the verify op: check tensors (verify/args.h), take pointers, call verify/kernel.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.h"

namespace pydecode {
namespace {

std::tuple<at::Tensor, at::Tensor> verify(const at::Tensor& draft_tokens, const std::optional<at::Tensor>& draft_logits,
                                          const at::Tensor& target_logits, const at::Tensor& num_draft,
                                          const std::optional<at::Tensor>& temperature, double temperature_val,
                                          const at::Tensor& seeds, int64_t step) {
  const VerifyArgs a = verify_args(draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds);
  at::Tensor accepted = at::empty({a.batch}, a.num_draft.options());
  at::Tensor next_tokens = at::empty({a.batch}, a.num_draft.options());
  verify_cpu(a.draft_tokens.const_data_ptr<int64_t>(),
             a.draft_logits.defined() ? a.draft_logits.const_data_ptr<float>() : nullptr,
             a.target_logits.const_data_ptr<float>(), a.num_draft.const_data_ptr<int64_t>(),
             a.temperature.defined() ? a.temperature.const_data_ptr<float>() : nullptr,
             static_cast<float>(temperature_val), a.seeds.const_data_ptr<int64_t>(), step, a.batch, a.k, a.vocab,
             accepted.data_ptr<int64_t>(), next_tokens.data_ptr<int64_t>());
  return {accepted, next_tokens};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) { m.impl("verify", &verify); }

}  // namespace pydecode
