// The ATen side of top_k_top_p_sample (and top_k_top_p_sample_logprobs), shared by the CPU and CUDA adapters:
// the inputs checked and made contiguous, the kernel's raw-pointer parameters, the outputs.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <optional>

#include "pydecode/common.h"
#include "pydecode/tensor_checks.h"

namespace pydecode {

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

}  // namespace pydecode
