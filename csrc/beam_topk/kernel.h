// Beam top-k on the CPU (plain C++ + OpenMP): the template behind torch.ops.pydecode.beam_topk.
// Contract (pydecode/ops/beam_topk/reference.py): for each batch item, the k best (score, token, beam) over its
// num_beams rows, score = log_softmax(row)[token] + beam_score (or row[token] + beam_score), descending, ties to the
// smaller beam * vocab + token, NaN as -inf.
//
// One pass per row finds its k largest raw values (a row's offset is the same for all its tokens, so the row's
// top k by value contains every candidate of that row that can make the global top k) while an online max /
// sum-of-exp gives the log-sum-exp. A merge of num_beams * k row candidates per batch item then adds the offsets.
// Nothing sorts the vocabulary.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace pydecode {

struct BeamCandidate {
  float score;
  int64_t index;  // token within the row, then beam * vocab + token after the merge
};

inline bool beam_before(const BeamCandidate& a, const BeamCandidate& b) {
  return a.score > b.score || (a.score == b.score && a.index < b.index);
}

// The k best raw values of one row (sorted, ties to the smaller token) and its max and log(sum(exp(x - max))).
inline int64_t beam_row_topk(const float* x, int64_t vocab, int64_t k, BeamCandidate* best, float* row_max,
                             float* row_logsum) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  int64_t n = 0;
  float m = neg_inf;
  double s = 0.0;  // sum of exp(x - m), rescaled whenever m grows
  for (int64_t t = 0; t < vocab; ++t) {
    float v = x[t];
    if (std::isnan(v)) v = neg_inf;
    if (v > m) {
      s = (m == neg_inf ? 0.0 : s * std::exp(static_cast<double>(m) - v)) + 1.0;
      m = v;
    } else if (v != neg_inf) {
      s += std::exp(static_cast<double>(v) - m);
    }
    if (n == k && !(v > best[k - 1].score)) continue;  // the common case: one compare
    int64_t pos = n < k ? n++ : k - 1;
    while (pos > 0 && v > best[pos - 1].score) {  // later tokens go after equal values
      best[pos] = best[pos - 1];
      --pos;
    }
    best[pos] = BeamCandidate{v, t};
  }
  *row_max = m;
  *row_logsum = static_cast<float>(std::log(s));
  return n;
}

// logits (batch * num_beams, vocab) float32; beam_scores (batch * num_beams,); outputs (batch, k).
inline void beam_topk_cpu(const float* logits, const float* beam_scores, int64_t batch, int64_t num_beams,
                          int64_t vocab, int64_t k, bool log_softmax, float* out_scores, int64_t* out_tokens,
                          int64_t* out_beams) {
  const int64_t rows = batch * num_beams, per_row = std::min(k, vocab);
  std::vector<BeamCandidate> cands(rows * per_row);
  std::vector<int64_t> counts(rows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float m, logsum;
    counts[r] = beam_row_topk(logits + r * vocab, vocab, per_row, cands.data() + r * per_row, &m, &logsum);
    for (int64_t i = 0; i < counts[r]; ++i) {
      BeamCandidate& c = cands[r * per_row + i];
      float v = log_softmax ? (c.score - m) - logsum : c.score;  // torch's log_softmax arithmetic
      v = v + beam_scores[r];
      c.score = std::isnan(v) ? -std::numeric_limits<float>::infinity() : v + 0.0f;
      c.index += (r % num_beams) * vocab;
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<BeamCandidate> pool;
    pool.reserve(num_beams * per_row);
    for (int64_t j = 0; j < num_beams; ++j) {
      const int64_t r = b * num_beams + j;
      pool.insert(pool.end(), cands.begin() + r * per_row, cands.begin() + r * per_row + counts[r]);
    }
    std::partial_sort(pool.begin(), pool.begin() + k, pool.end(), beam_before);
    for (int64_t i = 0; i < k; ++i) {
      out_scores[b * k + i] = pool[i].score;
      out_tokens[b * k + i] = pool[i].index % vocab;
      out_beams[b * k + i] = pool[i].index / vocab;
    }
  }
}

}  // namespace pydecode
