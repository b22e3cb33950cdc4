// CPU adapter of apply_penalties_: check tensors, call kernel.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "args.h"
#include "kernel.h"

namespace pydecode {
namespace {

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

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) {
  m.impl("apply_penalties_", &apply_penalties_);
}

}  // namespace pydecode
