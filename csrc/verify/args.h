// Tensor checks shared by the adapters of the verify op (contract: pydecode/ops/verify/reference.py).
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace pydecode {

// The verify op's inputs, checked (shapes, dtypes, one device) and made contiguous; absent optionals stay undefined.
struct VerifyArgs {
  at::Tensor draft_tokens, draft_logits, target_logits, num_draft, temperature, seeds;
  int64_t batch, k, vocab;
};

inline VerifyArgs verify_args(const at::Tensor& draft_tokens, const std::optional<at::Tensor>& draft_logits,
                              const at::Tensor& target_logits, const at::Tensor& num_draft,
                              const std::optional<at::Tensor>& temperature, const at::Tensor& seeds) {
  TORCH_CHECK(draft_tokens.dim() == 2 && draft_tokens.scalar_type() == at::kLong,
              "draft_tokens must be int64 of shape (B, K)");
  VerifyArgs a;
  a.batch = draft_tokens.size(0);
  a.k = draft_tokens.size(1);
  TORCH_CHECK(target_logits.dim() == 3 && target_logits.size(0) == a.batch && target_logits.size(1) == a.k + 1 &&
                  target_logits.scalar_type() == at::kFloat,
              "target_logits must be float32 of shape (", a.batch, ", ", a.k + 1, ", V)");
  a.vocab = target_logits.size(2);
  TORCH_CHECK(a.vocab + a.k < (int64_t{1} << 31), "vocab + K must be below 2^31");
  const auto device = target_logits.device();
  auto same_device = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.device() == device, name, " must be on ", device, ", got ", t.device());
  };
  same_device(draft_tokens, "draft_tokens");
  if (draft_logits.has_value() && draft_logits->defined()) {
    TORCH_CHECK(draft_logits->sizes() == at::IntArrayRef({a.batch, a.k, a.vocab}) &&
                    draft_logits->scalar_type() == at::kFloat,
                "draft_logits must be float32 of shape (", a.batch, ", ", a.k, ", ", a.vocab, ")");
    same_device(*draft_logits, "draft_logits");
    a.draft_logits = draft_logits->contiguous();
  }
  TORCH_CHECK(num_draft.sizes() == at::IntArrayRef({a.batch}) && num_draft.scalar_type() == at::kLong,
              "num_draft must be int64 of shape (", a.batch, ",)");
  TORCH_CHECK(seeds.sizes() == at::IntArrayRef({a.batch}) && seeds.scalar_type() == at::kLong,
              "seeds must be int64 of shape (", a.batch, ",)");
  same_device(num_draft, "num_draft");
  same_device(seeds, "seeds");
  if (temperature.has_value() && temperature->defined()) {
    TORCH_CHECK(temperature->dim() == 1 && temperature->size(0) == a.batch, "temperature must have shape (", a.batch,
                ",)");
    same_device(*temperature, "temperature");
    a.temperature = temperature->to(at::kFloat).contiguous();
  }
  a.draft_tokens = draft_tokens.contiguous();
  a.target_logits = target_logits.contiguous();
  a.num_draft = num_draft.contiguous();
  a.seeds = seeds.contiguous();
  return a;
}

}  // namespace pydecode
