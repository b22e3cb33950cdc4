// CPU speculative verification (semantics of pydecode/ops/verify/reference.py): one row per OpenMP iteration.
// Inputs are float32 processed logits, row-major: target (B, K + 1, V), draft (B, K, V) or null (one-hot drafts).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "pydecode/common.h"

namespace pydecode {
namespace verify_detail {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// p(v) = exp(x[v] - max) / sum; NaN logits count as -inf.
struct Softmax {
  float max = kNegInf;
  float sum = 0.0f;
  Softmax(const float* x, int64_t vocab) {
    for (int64_t v = 0; v < vocab; ++v) max = x[v] > max ? x[v] : max;
    double total = 0.0;
    for (int64_t v = 0; v < vocab; ++v) total += std::isnan(x[v]) ? 0.0 : std::exp(x[v] - max);
    sum = static_cast<float>(total);
  }
  float prob(const float* x, int64_t v) const { return std::isnan(x[v]) ? 0.0f : std::exp(x[v] - max) / sum; }
};

inline int64_t argmax(const float* x, int64_t vocab) {
  int64_t best = 0;
  float best_val = kNegInf;
  for (int64_t v = 0; v < vocab; ++v) {
    if (x[v] > best_val) { best_val = x[v]; best = v; }
  }
  return best;
}

// argmax_v score(v) + gumbel(v) over the stream words of the row key (first index on ties).
template <typename Score>
int64_t gumbel_argmax(uint32_t key, int64_t vocab, Score score) {
  int64_t best = 0;
  float best_val = kNegInf;
  for (int64_t v = 0; v < vocab; ++v) {
    const float s = score(v);
    if (!(s > kNegInf)) continue;
    const float noisy = s + gumbel_from_bits(token_bits(key, static_cast<uint32_t>(v)));
    if (noisy > best_val) { best_val = noisy; best = v; }
  }
  return best;
}

}  // namespace verify_detail

inline void verify_row(const int64_t* draft_tokens, const float* draft_logits, const float* target_logits,
                       int64_t n, bool greedy, uint32_t key, int64_t k, int64_t vocab, int64_t* accepted,
                       int64_t* next_token) {
  using namespace verify_detail;
  int64_t a = 0;
  for (; a < n; ++a) {
    const float* target = target_logits + a * vocab;
    const int64_t x = draft_tokens[a];
    bool ok;
    if (greedy) {
      ok = argmax(target, vocab) == x;
    } else {
      const float p = Softmax(target, vocab).prob(target, x);
      const float q = draft_logits ? Softmax(draft_logits + a * vocab, vocab).prob(draft_logits + a * vocab, x) : 1.0f;
      ok = uniform_from_bits(token_bits(key, static_cast<uint32_t>(vocab + a))) * q < p;
    }
    if (!ok) break;
  }
  *accepted = a;
  const float* target = target_logits + a * vocab;
  if (greedy) {
    *next_token = argmax(target, vocab);
  } else if (a == n) {  // every draft accepted: the bonus token, exactly the sampler's draw
    *next_token = gumbel_argmax(key, vocab, [&](int64_t v) { return std::isnan(target[v]) ? kNegInf : target[v]; });
  } else {  // rejected: draw from max(p - q, 0), or p where that has no mass
    const Softmax ps(target, vocab);
    const float* draft = draft_logits ? draft_logits + a * vocab : nullptr;
    const Softmax qs = draft ? Softmax(draft, vocab) : Softmax(target, 0);
    const int64_t x = draft_tokens[a];
    auto residual = [&](int64_t v) {
      const float q = draft ? qs.prob(draft, v) : (v == x ? 1.0f : 0.0f);
      const float r = ps.prob(target, v) - q;
      return r > 0.0f ? r : 0.0f;
    };
    double mass = 0.0;
    for (int64_t v = 0; v < vocab; ++v) mass += residual(v);
    if (mass > 0.0) {
      *next_token = gumbel_argmax(key, vocab, [&](int64_t v) { return std::log(residual(v)); });
    } else {
      *next_token = gumbel_argmax(key, vocab, [&](int64_t v) { return std::log(ps.prob(target, v)); });
    }
  }
}

// accepted / next_tokens: (B,) outputs. temperature: (B,) or null (then temperature_val); <= 0 is a greedy row.
inline void verify_cpu(const int64_t* draft_tokens, const float* draft_logits, const float* target_logits,
                       const int64_t* num_draft, const float* temperature, float temperature_val,
                       const int64_t* seeds, int64_t step, int64_t batch, int64_t k, int64_t vocab,
                       int64_t* accepted, int64_t* next_tokens) {
#pragma omp parallel for schedule(dynamic, 1) if (batch > 1)
  for (int64_t b = 0; b < batch; ++b) {
    verify_row(draft_tokens + b * k, draft_logits ? draft_logits + b * k * vocab : nullptr,
               target_logits + b * (k + 1) * vocab, num_draft[b], row_param(temperature, temperature_val, b) <= 0.0f,
               step_key(seeds[b], step), k, vocab, accepted + b, next_tokens + b);
  }
}

}  // namespace pydecode
