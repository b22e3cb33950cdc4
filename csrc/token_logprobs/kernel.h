// CPU kernel of token_logprobs: plain C++ on raw pointers, OpenMP across rows. Semantics are those of
// pydecode/ops/logprobs/reference.py; the ATen adapter is cpu.cpp.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "pydecode/cpu_logits.h"

namespace pydecode {

// chosen[b] = log_softmax(logits[b])[tokens[b]] (NaN for a token outside [0, vocab)); top_values / top_ids
// (batch, top_n) the top_n best in descending order, ties to the lower id.
template <typename T>
void logprobs_cpu(const T* logits, const int64_t* tokens, int64_t batch, int64_t vocab, int64_t top_n,
                  float* chosen, float* top_values, int64_t* top_ids) {
#pragma omp parallel for schedule(dynamic, 1) if (batch > 1)
  for (int64_t b = 0; b < batch; ++b) {
    const T* row = logits + b * vocab;
    const LogNormalizer norm = row_log_normalizer(row, vocab);
    const int64_t tok = tokens[b];
    chosen[b] = (tok >= 0 && tok < vocab) ? norm.at(sanitized(row[tok])) : std::numeric_limits<float>::quiet_NaN();
    if (top_n == 0) continue;
    float* vals = top_values + b * top_n;
    int64_t* ids = top_ids + b * top_n;
    int64_t filled = 0;
    for (int64_t i = 0; i < vocab; ++i) {  // insertion into the sorted top_n list
      const float v = sanitized(row[i]);
      if (filled == top_n && !(v > vals[top_n - 1])) continue;
      int64_t pos = std::min(filled, top_n - 1);
      for (; pos > 0 && v > vals[pos - 1]; --pos) { vals[pos] = vals[pos - 1]; ids[pos] = ids[pos - 1]; }
      vals[pos] = v;
      ids[pos] = i;
      filled = std::min(filled + 1, top_n);
    }
    for (int64_t j = 0; j < top_n; ++j) vals[j] = norm.at(vals[j]);
  }
}

}  // namespace pydecode
