// Tensor checks and conversions shared by the CPU and CUDA adapters of the sampling ops.
#pragma once
#include <ATen/ATen.h>

#include <optional>

#include "pydecode/common.h"

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

// The sampler's inputs, checked and made contiguous, with the raw-pointer parameters of the kernel templates.
struct SampleArgs {
  at::Tensor logits, seeds, temperature, top_k, top_p, min_p;  // own the memory params points into
  SampleParams params;
};

inline SampleArgs sample_args(const at::Tensor& logits_in, const std::optional<at::Tensor>& temperature,
                              double temperature_val, const std::optional<at::Tensor>& top_k, int64_t top_k_val,
                              const std::optional<at::Tensor>& top_p, double top_p_val,
                              const std::optional<at::Tensor>& min_p, double min_p_val, const at::Tensor& seeds_in,
                              int64_t step) {
  check_logits(logits_in);
  check_rows(logits_in, seeds_in, "seeds");
  TORCH_CHECK(seeds_in.scalar_type() == at::kLong, "seeds must be int64, got ", seeds_in.scalar_type());
  SampleArgs a;
  a.logits = logits_in.contiguous();
  a.seeds = seeds_in.contiguous();
  a.temperature = row_array(temperature, at::kFloat, a.logits, "temperature");
  a.top_k = top_k_array(top_k, a.logits);
  a.top_p = row_array(top_p, at::kFloat, a.logits, "top_p");
  a.min_p = row_array(min_p, at::kFloat, a.logits, "min_p");
  a.params = SampleParams{data_or_null<float>(a.temperature), static_cast<float>(temperature_val),
                          data_or_null<int32_t>(a.top_k), top_k_scalar(top_k_val, a.logits.size(1)),
                          data_or_null<float>(a.top_p), static_cast<float>(top_p_val),
                          data_or_null<float>(a.min_p), static_cast<float>(min_p_val),
                          a.seeds.const_data_ptr<int64_t>(), step};
  return a;
}

// The sampler's outputs: tokens (B,) int64 and, when asked for, the drawn tokens' logprobs (B,) float32.
struct SampleOutputs {
  at::Tensor tokens, logprob, processed_logprob;
  SampleOutputs(const at::Tensor& logits, bool with_logprobs)
      : tokens(at::empty({logits.size(0)}, logits.options().dtype(at::kLong))) {
    if (!with_logprobs) return;
    logprob = at::empty({logits.size(0)}, logits.options().dtype(at::kFloat));
    processed_logprob = at::empty_like(logprob);
  }
  int64_t batch() const { return tokens.size(0); }
  float* logprob_data() const { return logprob.defined() ? logprob.data_ptr<float>() : nullptr; }
  float* processed_logprob_data() const {
    return processed_logprob.defined() ? processed_logprob.data_ptr<float>() : nullptr;
  }
};

// The penalties' inputs, checked: logits are modified in place, so they must already be contiguous float32.
struct PenaltyArgs {
  at::Tensor counts, prompt_mask, repetition, frequency, presence;
};

inline PenaltyArgs penalty_args(const at::Tensor& logits, const at::Tensor& counts,
                                const std::optional<at::Tensor>& prompt_mask,
                                const std::optional<at::Tensor>& repetition, const std::optional<at::Tensor>& frequency,
                                const std::optional<at::Tensor>& presence) {
  check_logits(logits, /*float32_only=*/true);
  TORCH_CHECK(logits.is_contiguous(), "logits must be contiguous (penalties are applied in place)");
  TORCH_CHECK(counts.sizes() == logits.sizes() && counts.scalar_type() == at::kInt && counts.device() == logits.device(),
              "token_counts must be int32 of shape ", logits.sizes(), " on ", logits.device());
  PenaltyArgs a;
  a.counts = counts.contiguous();
  if (prompt_mask.has_value() && prompt_mask->defined()) {
    TORCH_CHECK(prompt_mask->sizes() == logits.sizes() && prompt_mask->scalar_type() == at::kBool &&
                prompt_mask->device() == logits.device(), "prompt_mask must be bool of shape ", logits.sizes());
    a.prompt_mask = prompt_mask->contiguous();
  }
  a.repetition = row_array(repetition, at::kFloat, logits, "repetition");
  a.frequency = row_array(frequency, at::kFloat, logits, "frequency");
  a.presence = row_array(presence, at::kFloat, logits, "presence");
  return a;
}

inline void check_counts(const at::Tensor& counts, const at::Tensor& tokens) {
  TORCH_CHECK(counts.dim() == 2 && counts.scalar_type() == at::kInt && counts.is_contiguous(),
              "token_counts must be a contiguous int32 tensor of shape (batch, vocab)");
  check_rows(counts, tokens, "tokens");
}

// Outputs of token_logprobs: (chosen (B,), top values (B, n), top ids (B, n)) with n = min(top_n, vocab).
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> logprob_outputs(const at::Tensor& logits,
                                                                      const at::Tensor& tokens, int64_t top_n) {
  check_logits(logits);
  check_rows(logits, tokens, "tokens");
  TORCH_CHECK(top_n >= 0, "top_n must be >= 0, got ", top_n);
  const int64_t batch = logits.size(0), n = std::min(top_n, logits.size(1));
  const auto f32 = logits.options().dtype(at::kFloat);
  return {at::empty({batch}, f32), at::empty({batch, n}, f32), at::empty({batch, n}, f32.dtype(at::kLong))};
}

}  // namespace pydecode
