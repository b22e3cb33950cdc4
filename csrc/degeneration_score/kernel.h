// Degeneration scoring of contrastive search on the CPU (plain C++, OpenMP); semantics of
// pydecode/ops/degeneration/reference.py: per row b, the candidate k maximising
//   (1 - alpha) * probs[b, k] - alpha * max_{s unmasked} cos(candidates[b, k], context[b, s])
// (penalty 0 when no context position is unmasked; the first best on ties).
// Work is split over (row, chunk of context positions) so a single long row still uses every thread; each context
// row is converted to float once and dotted with all K normalised candidates.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "pydecode/cpu_logits.h"

namespace pydecode {

constexpr int64_t kDegenerationChunk = 64;  // context positions per work item

template <typename T>
void degeneration_score_cpu(const T* candidates, const T* context, const bool* mask, const float* probs,
                            const float* alpha, float alpha_val, int64_t batch, int64_t k, int64_t seq,
                            int64_t hidden, int64_t context_stride, int64_t mask_stride, bool normalize_context,
                            float* scores, int64_t* best) {
  // candidates (batch, k, hidden) contiguous; context rows hidden apart, batch rows context_stride apart;
  // mask (batch, seq) rows mask_stride apart, or null; probs (batch, k); alpha (batch,) or null (alpha_val).
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> unit(static_cast<size_t>(batch * k * hidden));
#pragma omp parallel for schedule(static) if (batch * k * hidden > (1 << 15))
  for (int64_t i = 0; i < batch * k; ++i) {
    const T* src = candidates + i * hidden;
    float* dst = unit.data() + i * hidden;
    float sq = 0.0f;
    for (int64_t h = 0; h < hidden; ++h) {
      dst[h] = to_float(src[h]);
      sq += dst[h] * dst[h];
    }
    const float norm = std::sqrt(sq);
    for (int64_t h = 0; h < hidden; ++h) dst[h] /= norm;
  }

  const int64_t chunks = (seq + kDegenerationChunk - 1) / kDegenerationChunk;
  std::vector<float> partial(static_cast<size_t>(batch * chunks * k), neg_inf);
#pragma omp parallel if (batch * seq * hidden * k > (1 << 16))
  {
    std::vector<float> row(std::is_same<T, float>::value ? 0 : static_cast<size_t>(hidden));
#pragma omp for schedule(static)
    for (int64_t item = 0; item < batch * chunks; ++item) {
      const int64_t b = item / chunks, c = item % chunks;
      const int64_t s_end = std::min(seq, (c + 1) * kDegenerationChunk);
      float* out = partial.data() + item * k;
      for (int64_t s = c * kDegenerationChunk; s < s_end; ++s) {
        if (mask && !mask[b * mask_stride + s]) continue;
        const T* src = context + b * context_stride + s * hidden;
        const float* x;
        if constexpr (std::is_same<T, float>::value) {
          x = src;
        } else {
          for (int64_t h = 0; h < hidden; ++h) row[h] = to_float(src[h]);
          x = row.data();
        }
        float inv_norm = 1.0f;
        if (normalize_context) {
          float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
          for (int64_t h = 0; h < hidden; ++h) sq += x[h] * x[h];
          inv_norm = 1.0f / std::sqrt(sq);
        }
        for (int64_t j = 0; j < k; ++j) {
          const float* u = unit.data() + (b * k + j) * hidden;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t h = 0; h < hidden; ++h) dot += x[h] * u[h];
          out[j] = std::max(out[j], dot * inv_norm);
        }
      }
    }
  }

  for (int64_t b = 0; b < batch; ++b) {
    const float a = alpha ? alpha[b] : alpha_val;
    int64_t arg = 0;
    float top = neg_inf;
    for (int64_t j = 0; j < k; ++j) {
      float penalty = neg_inf;
      for (int64_t c = 0; c < chunks; ++c) penalty = std::max(penalty, partial[(b * chunks + c) * k + j]);
      if (penalty == neg_inf) penalty = 0.0f;
      const float score = (1.0f - a) * probs[b * k + j] - a * penalty;
      scores[b * k + j] = score;
      if (j == 0 || score > top) top = score, arg = j;
    }
    best[b] = arg;
  }
}

}  // namespace pydecode
