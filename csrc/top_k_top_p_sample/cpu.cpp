// CPU adapters of top_k_top_p_sample and top_k_top_p_sample_logprobs (one kernel, logprobs optional): check tensors,
// dispatch the dtype, call kernel.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.h"

namespace pydecode {
namespace {

SampleOutputs sample(const at::Tensor& logits, const std::optional<at::Tensor>& temperature, double temperature_val,
                     const std::optional<at::Tensor>& top_k, int64_t top_k_val, const std::optional<at::Tensor>& top_p,
                     double top_p_val, const std::optional<at::Tensor>& min_p, double min_p_val,
                     const at::Tensor& seeds, int64_t step, bool with_logprobs) {
  const SampleArgs a = sample_args(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p,
                                   min_p_val, seeds, step);
  SampleOutputs out(a.logits, with_logprobs);
  with_logits<Half, BFloat16>(a.logits, [&](auto ptr) {
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

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) {
  m.impl("top_k_top_p_sample", &top_k_top_p_sample);
  m.impl("top_k_top_p_sample_logprobs", &top_k_top_p_sample_logprobs);
}

}  // namespace pydecode
