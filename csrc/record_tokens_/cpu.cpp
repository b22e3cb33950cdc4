// CPU adapter of record_tokens_: check tensors, call kernel.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.h"

namespace pydecode {
namespace {

void record_tokens_(at::Tensor& counts, const at::Tensor& tokens) {
  check_counts(counts, tokens);
  const at::Tensor tok = tokens.to(at::kLong).contiguous();
  record_cpu(counts.data_ptr<int32_t>(), tok.const_data_ptr<int64_t>(), counts.size(0), counts.size(1));
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) {
  m.impl("record_tokens_", &record_tokens_);
}

}  // namespace pydecode
