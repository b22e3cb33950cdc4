// CPU adapter of token_logprobs: check tensors, dispatch the dtype, call kernel.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.h"

namespace pydecode {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> token_logprobs(const at::Tensor& logits_in, const at::Tensor& tokens,
                                                              int64_t top_n) {
  auto [chosen, values, ids] = logprob_outputs(logits_in, tokens, top_n);
  const at::Tensor logits = logits_in.contiguous(), tok = tokens.to(at::kLong).contiguous();
  with_logits<Half, BFloat16>(logits, [&](auto ptr) {
    logprobs_cpu(ptr, tok.const_data_ptr<int64_t>(), logits.size(0), logits.size(1), values.size(1),
                 chosen.data_ptr<float>(), values.data_ptr<float>(), ids.data_ptr<int64_t>());
  });
  return {chosen, values, ids};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) {
  m.impl("token_logprobs", &token_logprobs);
}

}  // namespace pydecode
