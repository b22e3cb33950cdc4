// CPU adapter of the verify op: check tensors, take pointers, call pydecode/verify.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "pydecode/verify.h"

namespace pydecode {
namespace {

std::tuple<at::Tensor, at::Tensor> verify(const at::Tensor& draft_tokens_in,
                                          const std::optional<at::Tensor>& draft_logits_in,
                                          const at::Tensor& target_logits_in, const at::Tensor& num_draft_in,
                                          const std::optional<at::Tensor>& temperature_in, double temperature_val,
                                          const at::Tensor& seeds_in, int64_t step) {
  TORCH_CHECK(draft_tokens_in.dim() == 2 && draft_tokens_in.scalar_type() == at::kLong,
              "draft_tokens must be int64 of shape (B, K)");
  const int64_t batch = draft_tokens_in.size(0), k = draft_tokens_in.size(1);
  TORCH_CHECK(target_logits_in.dim() == 3 && target_logits_in.size(0) == batch && target_logits_in.size(1) == k + 1 &&
                  target_logits_in.scalar_type() == at::kFloat,
              "target_logits must be float32 of shape (", batch, ", ", k + 1, ", V)");
  const int64_t vocab = target_logits_in.size(2);
  at::Tensor draft_logits;
  if (draft_logits_in.has_value() && draft_logits_in->defined()) {
    TORCH_CHECK(draft_logits_in->sizes() == at::IntArrayRef({batch, k, vocab}) &&
                    draft_logits_in->scalar_type() == at::kFloat,
                "draft_logits must be float32 of shape (", batch, ", ", k, ", ", vocab, ")");
    draft_logits = draft_logits_in->contiguous();
  }
  TORCH_CHECK(num_draft_in.sizes() == at::IntArrayRef({batch}) && num_draft_in.scalar_type() == at::kLong,
              "num_draft must be int64 of shape (", batch, ",)");
  TORCH_CHECK(seeds_in.sizes() == at::IntArrayRef({batch}) && seeds_in.scalar_type() == at::kLong,
              "seeds must be int64 of shape (", batch, ",)");
  at::Tensor temperature;
  if (temperature_in.has_value() && temperature_in->defined()) {
    TORCH_CHECK(temperature_in->dim() == 1 && temperature_in->size(0) == batch, "temperature must have shape (",
                batch, ",)");
    temperature = temperature_in->to(at::kFloat).contiguous();
  }
  const at::Tensor draft_tokens = draft_tokens_in.contiguous(), target_logits = target_logits_in.contiguous();
  const at::Tensor num_draft = num_draft_in.contiguous(), seeds = seeds_in.contiguous();
  at::Tensor accepted = at::empty({batch}, num_draft.options());
  at::Tensor next_tokens = at::empty({batch}, num_draft.options());
  verify_cpu(draft_tokens.const_data_ptr<int64_t>(),
             draft_logits.defined() ? draft_logits.const_data_ptr<float>() : nullptr,
             target_logits.const_data_ptr<float>(), num_draft.const_data_ptr<int64_t>(),
             temperature.defined() ? temperature.const_data_ptr<float>() : nullptr,
             static_cast<float>(temperature_val), seeds.const_data_ptr<int64_t>(), step, batch, k, vocab,
             accepted.data_ptr<int64_t>(), next_tokens.data_ptr<int64_t>());
  return {accepted, next_tokens};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) { m.impl("verify", &verify); }

}  // namespace pydecode
