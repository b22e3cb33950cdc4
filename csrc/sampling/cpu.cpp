// CPU adapters of the sampling ops: check tensors, dispatch the dtype, call the templates of sampling/kernel.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.h"

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

SampleOutputs sample(const at::Tensor& logits, const std::optional<at::Tensor>& temperature, double temperature_val,
                     const std::optional<at::Tensor>& top_k, int64_t top_k_val, const std::optional<at::Tensor>& top_p,
                     double top_p_val, const std::optional<at::Tensor>& min_p, double min_p_val,
                     const at::Tensor& seeds, int64_t step, bool with_logprobs) {
  const SampleArgs a = sample_args(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p,
                                   min_p_val, seeds, step);
  SampleOutputs out(a.logits, with_logprobs);
  with_logits(a.logits, [&](auto ptr) {
    sample_cpu(ptr, out.batch(), a.logits.size(1), a.params, out.tokens.data_ptr<int64_t>(), out.logprob_data(),
               out.processed_logprob_data());
  });
  return out;
}

at::Tensor top_k_top_p_sample(const at::Tensor& logits, const std::optional<at::Tensor>& temperature,
                              double temperature_val, const std::optional<at::Tensor>& top_k, int64_t top_k_val,
                              const std::optional<at::Tensor>& top_p, double top_p_val,
                              const std::optional<at::Tensor>& min_p, double min_p_val, const at::Tensor& seeds,
                              int64_t step) {
  return sample(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p, min_p_val, seeds,
                step, false).tokens;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> top_k_top_p_sample_logprobs(
    const at::Tensor& logits, const std::optional<at::Tensor>& temperature, double temperature_val,
    const std::optional<at::Tensor>& top_k, int64_t top_k_val, const std::optional<at::Tensor>& top_p,
    double top_p_val, const std::optional<at::Tensor>& min_p, double min_p_val, const at::Tensor& seeds,
    int64_t step) {
  const SampleOutputs out = sample(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p,
                                   min_p_val, seeds, step, true);
  return {out.tokens, out.logprob, out.processed_logprob};
}

void apply_penalties_(at::Tensor& logits, const at::Tensor& counts, const std::optional<at::Tensor>& prompt_mask,
                      const std::optional<at::Tensor>& repetition, double repetition_val,
                      const std::optional<at::Tensor>& frequency, double frequency_val,
                      const std::optional<at::Tensor>& presence, double presence_val) {
  const PenaltyArgs a = penalty_args(logits, counts, prompt_mask, repetition, frequency, presence);
  penalties_cpu(logits.data_ptr<float>(), a.counts.const_data_ptr<int32_t>(), data_or_null<bool>(a.prompt_mask),
                logits.size(0), logits.size(1), data_or_null<float>(a.repetition), static_cast<float>(repetition_val),
                data_or_null<float>(a.frequency), static_cast<float>(frequency_val), data_or_null<float>(a.presence),
                static_cast<float>(presence_val));
}

void record_tokens_(at::Tensor& counts, const at::Tensor& tokens) {
  check_counts(counts, tokens);
  const at::Tensor tok = tokens.to(at::kLong).contiguous();
  record_cpu(counts.data_ptr<int32_t>(), tok.const_data_ptr<int64_t>(), counts.size(0), counts.size(1));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> token_logprobs(const at::Tensor& logits_in, const at::Tensor& tokens,
                                                              int64_t top_n) {
  auto [chosen, values, ids] = logprob_outputs(logits_in, tokens, top_n);
  const at::Tensor logits = logits_in.contiguous(), tok = tokens.to(at::kLong).contiguous();
  with_logits(logits, [&](auto ptr) {
    logprobs_cpu(ptr, tok.const_data_ptr<int64_t>(), logits.size(0), logits.size(1), values.size(1),
                 chosen.data_ptr<float>(), values.data_ptr<float>(), ids.data_ptr<int64_t>());
  });
  return {chosen, values, ids};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) {
  m.impl("top_k_top_p_sample", &top_k_top_p_sample);
  m.impl("top_k_top_p_sample_logprobs", &top_k_top_p_sample_logprobs);
  m.impl("apply_penalties_", &apply_penalties_);
  m.impl("record_tokens_", &record_tokens_);
  m.impl("token_logprobs", &token_logprobs);
}

}  // namespace pydecode
