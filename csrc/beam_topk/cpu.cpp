// CPU adapter of beam_topk: check tensors, convert to float32, call beam_topk/kernel.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "kernel.h"

namespace pydecode {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> beam_topk(const at::Tensor& logits_in, const at::Tensor& scores_in,
                                                         int64_t num_beams, int64_t k, bool log_softmax) {
  TORCH_CHECK(logits_in.dim() == 2 && logits_in.size(1) > 0, "logits must have shape (rows, vocab), got ",
              logits_in.sizes());
  TORCH_CHECK(at::isFloatingType(logits_in.scalar_type()), "logits must be floating point");
  const int64_t rows = logits_in.size(0), vocab = logits_in.size(1);
  TORCH_CHECK(num_beams >= 1 && rows % num_beams == 0, "rows (", rows, ") must be a multiple of num_beams (",
              num_beams, ")");
  TORCH_CHECK(k >= 1 && k <= num_beams * vocab, "k must lie in [1, num_beams * vocab], got ", k);
  TORCH_CHECK(scores_in.dim() == 1 && scores_in.size(0) == rows, "beam_scores must have shape (", rows, ",)");
  const at::Tensor logits = logits_in.to(at::kFloat).contiguous();
  const at::Tensor scores = scores_in.to(at::kFloat).contiguous();
  const int64_t batch = rows / num_beams;
  at::Tensor out_scores = at::empty({batch, k}, logits.options());
  at::Tensor out_tokens = at::empty({batch, k}, logits.options().dtype(at::kLong));
  at::Tensor out_beams = at::empty({batch, k}, logits.options().dtype(at::kLong));
  beam_topk_cpu(logits.const_data_ptr<float>(), scores.const_data_ptr<float>(), batch, num_beams, vocab, k,
                log_softmax, out_scores.data_ptr<float>(), out_tokens.data_ptr<int64_t>(),
                out_beams.data_ptr<int64_t>());
  return {out_scores, out_tokens, out_beams};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CPU, m) { m.impl("beam_topk", &beam_topk); }

}  // namespace pydecode
