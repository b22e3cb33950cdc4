// CUDA adapters of the sampling ops: check tensors, dispatch the dtype, take the stream, call sampling/kernel.cuh.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.cuh"

namespace pydecode {
namespace {

void check_launch(cudaError_t status) { TORCH_CHECK(status == cudaSuccess, "CUDA launch failed: ", cudaGetErrorString(status)); }

// Calls fn(ptr) with logits' data as const float* / const __half* / const __nv_bfloat16*.
template <typename Fn>
void with_logits(const at::Tensor& logits, Fn&& fn) {
  switch (logits.scalar_type()) {
    case at::kFloat: return fn(logits.const_data_ptr<float>());
    case at::kHalf: return fn(reinterpret_cast<const __half*>(logits.const_data_ptr<at::Half>()));
    case at::kBFloat16: return fn(reinterpret_cast<const __nv_bfloat16*>(logits.const_data_ptr<at::BFloat16>()));
    default: TORCH_CHECK(false, "unsupported logits dtype ", logits.scalar_type());
  }
}

SampleOutputs sample(const at::Tensor& logits, const std::optional<at::Tensor>& temperature, double temperature_val,
                     const std::optional<at::Tensor>& top_k, int64_t top_k_val, const std::optional<at::Tensor>& top_p,
                     double top_p_val, const std::optional<at::Tensor>& min_p, double min_p_val,
                     const at::Tensor& seeds, int64_t step, bool with_logprobs) {
  TORCH_CHECK(logits.size(1) < (int64_t{1} << 23), "the CUDA sampler needs vocab < 2^23");
  const c10::cuda::CUDAGuard guard(logits.device());
  const SampleArgs a = sample_args(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p,
                                   min_p_val, seeds, step);
  SampleOutputs out(a.logits, with_logprobs);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_logits(a.logits, [&](auto ptr) {
    check_launch(sample_cuda(ptr, out.batch(), a.logits.size(1), a.params, out.tokens.data_ptr<int64_t>(),
                             out.logprob_data(), out.processed_logprob_data(), stream));
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
  const c10::cuda::CUDAGuard guard(logits.device());
  const PenaltyArgs a = penalty_args(logits, counts, prompt_mask, repetition, frequency, presence);
  check_launch(penalties_cuda(logits.data_ptr<float>(), a.counts.const_data_ptr<int32_t>(),
                              data_or_null<bool>(a.prompt_mask), logits.size(0), logits.size(1),
                              data_or_null<float>(a.repetition), static_cast<float>(repetition_val),
                              data_or_null<float>(a.frequency), static_cast<float>(frequency_val),
                              data_or_null<float>(a.presence), static_cast<float>(presence_val),
                              c10::cuda::getCurrentCUDAStream()));
}

void record_tokens_(at::Tensor& counts, const at::Tensor& tokens) {
  check_counts(counts, tokens);
  const c10::cuda::CUDAGuard guard(counts.device());
  const at::Tensor tok = tokens.to(at::kLong).contiguous();
  check_launch(record_cuda(counts.data_ptr<int32_t>(), tok.const_data_ptr<int64_t>(), counts.size(0),
                           counts.size(1), c10::cuda::getCurrentCUDAStream()));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> token_logprobs(const at::Tensor& logits_in, const at::Tensor& tokens,
                                                              int64_t top_n) {
  at::Tensor chosen, values, ids;  // not a structured binding: lambdas capture those only from C++20
  std::tie(chosen, values, ids) = logprob_outputs(logits_in, tokens, top_n);
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous(), tok = tokens.to(at::kLong).contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  with_logits(logits, [&](auto ptr) {
    check_launch(logprobs_cuda(ptr, tok.const_data_ptr<int64_t>(), logits.size(0), logits.size(1), values.size(1),
                               chosen.data_ptr<float>(), values.data_ptr<float>(), ids.data_ptr<int64_t>(), stream));
  });
  return {chosen, values, ids};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) {
  m.impl("top_k_top_p_sample", &top_k_top_p_sample);
  m.impl("top_k_top_p_sample_logprobs", &top_k_top_p_sample_logprobs);
  m.impl("apply_penalties_", &apply_penalties_);
  m.impl("record_tokens_", &record_tokens_);
  m.impl("token_logprobs", &token_logprobs);
}

}  // namespace pydecode
