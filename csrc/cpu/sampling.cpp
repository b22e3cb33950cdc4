// CPU adapters of the sampling ops: check tensors, dispatch the dtype, call the templates of pydecode/sampling.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../sampling_args.h"
#include "pydecode/sampling.h"

namespace pydecode {
namespace {

// Calls fn(ptr) with logits' data as const float* / const Half* / const BFloat16*.
template <typename Fn>
void with_logits(const at::Tensor& logits, Fn&& fn) {
  switch (logits.scalar_type()) {
    case at::kFloat: return fn(logits.const_data_ptr<float>());
    case at::kHalf: return fn(reinterpret_cast<const Half*>(logits.const_data_ptr<at::Half>()));
    case at::kBFloat16: return fn(reinterpret_cast<const BFloat16*>(logits.const_data_ptr<at::BFloat16>()));
    default: TORCH_CHECK(false, "unsupported logits dtype ", logits.scalar_type());
  }
}

at::Tensor top_k_top_p_sample(const at::Tensor& logits_in, const std::optional<at::Tensor>& temperature,
                              double temperature_val, const std::optional<at::Tensor>& top_k, int64_t top_k_val,
                              const std::optional<at::Tensor>& top_p, double top_p_val,
                              const std::optional<at::Tensor>& min_p, double min_p_val, const at::Tensor& seeds_in,
                              int64_t step) {
  check_logits(logits_in);
  check_rows(logits_in, seeds_in, "seeds");
  TORCH_CHECK(seeds_in.scalar_type() == at::kLong, "seeds must be int64, got ", seeds_in.scalar_type());
  const at::Tensor logits = logits_in.contiguous(), seeds = seeds_in.contiguous();
  const int64_t batch = logits.size(0), vocab = logits.size(1);
  const at::Tensor t = row_array(temperature, at::kFloat, logits, "temperature");
  const at::Tensor k = top_k_array(top_k, logits);
  const at::Tensor p = row_array(top_p, at::kFloat, logits, "top_p");
  const at::Tensor mp = row_array(min_p, at::kFloat, logits, "min_p");
  const SampleParams params{data_or_null<float>(t), static_cast<float>(temperature_val),
                            data_or_null<int32_t>(k), top_k_scalar(top_k_val, vocab),
                            data_or_null<float>(p), static_cast<float>(top_p_val),
                            data_or_null<float>(mp), static_cast<float>(min_p_val),
                            seeds.const_data_ptr<int64_t>(), step};
  at::Tensor out = at::empty({batch}, logits.options().dtype(at::kLong));
  with_logits(logits, [&](auto ptr) { sample_cpu(ptr, batch, vocab, params, out.data_ptr<int64_t>()); });
  return out;
}

void apply_penalties_(at::Tensor& logits, const at::Tensor& counts, const std::optional<at::Tensor>& prompt_mask,
                      const std::optional<at::Tensor>& repetition, double repetition_val,
                      const std::optional<at::Tensor>& frequency, double frequency_val,
                      const std::optional<at::Tensor>& presence, double presence_val) {
  check_logits(logits, /*float32_only=*/true);
  TORCH_CHECK(logits.is_contiguous(), "logits must be contiguous (penalties are applied in place)");
  TORCH_CHECK(counts.sizes() == logits.sizes() && counts.scalar_type() == at::kInt,
              "token_counts must be int32 of shape ", logits.sizes());
  const at::Tensor c = counts.contiguous();
  at::Tensor mask;
  if (prompt_mask.has_value() && prompt_mask->defined()) {
    TORCH_CHECK(prompt_mask->sizes() == logits.sizes() && prompt_mask->scalar_type() == at::kBool,
                "prompt_mask must be bool of shape ", logits.sizes());
    mask = prompt_mask->contiguous();
  }
  const at::Tensor rep = row_array(repetition, at::kFloat, logits, "repetition");
  const at::Tensor freq = row_array(frequency, at::kFloat, logits, "frequency");
  const at::Tensor pres = row_array(presence, at::kFloat, logits, "presence");
  penalties_cpu(logits.data_ptr<float>(), c.const_data_ptr<int32_t>(), data_or_null<bool>(mask), logits.size(0),
                logits.size(1), data_or_null<float>(rep), static_cast<float>(repetition_val),
                data_or_null<float>(freq), static_cast<float>(frequency_val), data_or_null<float>(pres),
                static_cast<float>(presence_val));
}

void record_tokens_(at::Tensor& counts, const at::Tensor& tokens) {
  TORCH_CHECK(counts.dim() == 2 && counts.scalar_type() == at::kInt && counts.is_contiguous(),
              "token_counts must be a contiguous int32 tensor of shape (batch, vocab)");
  check_rows(counts, tokens, "tokens");
  const at::Tensor tok = tokens.to(at::kLong).contiguous();
  record_cpu(counts.data_ptr<int32_t>(), tok.const_data_ptr<int64_t>(), counts.size(0), counts.size(1));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> token_logprobs(const at::Tensor& logits_in, const at::Tensor& tokens,
                                                              int64_t top_n) {
  check_logits(logits_in);
  check_rows(logits_in, tokens, "tokens");
  TORCH_CHECK(top_n >= 0, "top_n must be >= 0, got ", top_n);
  const at::Tensor logits = logits_in.contiguous(), tok = tokens.to(at::kLong).contiguous();
  const int64_t batch = logits.size(0), vocab = logits.size(1), n = std::min(top_n, vocab);
  const auto f32 = logits.options().dtype(at::kFloat);
  at::Tensor chosen = at::empty({batch}, f32), values = at::empty({batch, n}, f32);
  at::Tensor ids = at::empty({batch, n}, f32.dtype(at::kLong));
  with_logits(logits, [&](auto ptr) {
    logprobs_cpu(ptr, tok.const_data_ptr<int64_t>(), batch, vocab, n, chosen.data_ptr<float>(),
                 values.data_ptr<float>(), ids.data_ptr<int64_t>());
  });
  return {chosen, values, ids};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) {
  m.impl("top_k_top_p_sample", &top_k_top_p_sample);
  m.impl("apply_penalties_", &apply_penalties_);
  m.impl("record_tokens_", &record_tokens_);
  m.impl("token_logprobs", &token_logprobs);
}

}  // namespace pydecode
