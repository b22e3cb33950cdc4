// CUDA adapter of beam_topk: check tensors, take the stream, call beam_topk/kernel.cuh.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "kernel.cuh"

namespace pydecode {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> beam_topk(const at::Tensor& logits_in, const at::Tensor& scores_in,
                                                         int64_t num_beams, int64_t k, bool log_softmax) {
  TORCH_CHECK(logits_in.dim() == 2 && logits_in.size(1) > 0, "logits must have shape (rows, vocab)");
  TORCH_CHECK(at::isFloatingType(logits_in.scalar_type()), "logits must be floating point");
  const int64_t rows = logits_in.size(0), vocab = logits_in.size(1);
  TORCH_CHECK(num_beams >= 1 && rows % num_beams == 0, "rows must be a multiple of num_beams");
  TORCH_CHECK(k >= 1 && k <= num_beams * vocab, "k must lie in [1, num_beams * vocab], got ", k);
  TORCH_CHECK(k <= kBeamTile, "the CUDA beam_topk keeps at most ", kBeamTile, " candidates per item, got k=", k);
  TORCH_CHECK(num_beams * vocab < (int64_t{1} << 32), "num_beams * vocab must be below 2^32");
  TORCH_CHECK(scores_in.dim() == 1 && scores_in.size(0) == rows, "beam_scores must have shape (", rows, ",)");
  const c10::cuda::CUDAGuard guard(logits_in.device());
  const at::Tensor logits = logits_in.to(at::kFloat).contiguous();
  const at::Tensor scores = scores_in.to(logits.device(), at::kFloat).contiguous();
  const int64_t batch = rows / num_beams, kp = beam_pow2(std::min(k, vocab));
  at::Tensor row_keys = at::empty({rows, kp}, logits.options().dtype(at::kLong));
  at::Tensor row_stats = at::empty({rows, 2}, logits.options());
  at::Tensor out_scores = at::empty({batch, k}, logits.options());
  at::Tensor out_tokens = at::empty({batch, k}, logits.options().dtype(at::kLong));
  at::Tensor out_beams = at::empty({batch, k}, logits.options().dtype(at::kLong));
  const cudaError_t status = beam_topk_cuda(
      logits.const_data_ptr<float>(), scores.const_data_ptr<float>(), batch, num_beams, vocab, k, log_softmax,
      row_keys.data_ptr<int64_t>(), row_stats.data_ptr<float>(), out_scores.data_ptr<float>(),
      out_tokens.data_ptr<int64_t>(), out_beams.data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(status == cudaSuccess, "beam_topk CUDA launch failed: ", cudaGetErrorString(status));
  return {out_scores, out_tokens, out_beams};
}

}  // namespace

TORCH_LIBRARY_IMPL(pydecode, CUDA, m) { m.impl("beam_topk", &beam_topk); }

}  // namespace pydecode
