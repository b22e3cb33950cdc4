// CPU kernel of top_k_top_p_sample (and top_k_top_p_sample_logprobs): plain C++ on raw pointers, OpenMP across
// rows. Semantics are those of pydecode/ops/sample/reference.py (see there); the ATen adapter is cpu.cpp.
//
// sample, per row, over a float32 scratch copy x = sanitize(logits) / temperature:
//   1. one pass: x and its max M (argmax for greedy rows; no finite logit -> token 0);
//   2. top-k: the exact k-th largest value by a radix select on order-preserving keys (count histograms of 11, 11
//      and 10 bits, each level over the previous level's bucket only); the kept entries (>= it) are compacted;
//   3. top-p: one pass for e = exp(x - M) and Z over the kept entries, then the same radix select with mass
//      histograms finds the pivot: the largest value whose kept-from-the-top mass reaches top_p * Z;
//   4. draw: Gumbel-max over the kept entries; min-p (exp(x - M) < min_p drops) is tested only for tokens that
//      can still win: a token with x + max_gumbel below the best noisy value so far is skipped without a log;
//   5. only when asked for: the drawn token's logprob (one log-sum-exp pass over the input row) and processed
//      logprob (the kept entries' mass, over the top-k survivors when top-k is on).
// No sort. Top-p ties at the pivot value are all kept: the tie rule of pydecode/ops/sample/reference.py.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "pydecode/common.h"
#include "pydecode/cpu_logits.h"
#include "pydecode/cpu_math.h"

namespace pydecode {

// Scratch of one thread for rows of `vocab` entries.
struct SampleScratch {
  std::vector<float> x, kept, weight, sel_v, sel_w;
  std::vector<int32_t> kept_id;
  explicit SampleScratch(int64_t vocab)
      : x(vocab), kept(vocab), weight(vocab), sel_v(vocab), sel_w(vocab), kept_id(vocab) {}
};

// Largest value tau of vals[0, n) whose weight from the top, weight(vals >= tau), reaches target (weights null: 1
// each). Radix select over three key digits; -inf when the total falls short of target (rounding): keep all.
inline float threshold_from_top(const float* vals, const float* weights, int64_t n, double target, SampleScratch& s) {
  static constexpr int kShift[3] = {21, 10, 0};
  static constexpr uint32_t kMask[3] = {0x7FFu, 0x7FFu, 0x3FFu};
  double hist[2048];
  double above = 0.0;
  for (int level = 0; level < 3; ++level) {
    const int shift = kShift[level];
    const uint32_t mask = kMask[level];
    std::fill(hist, hist + mask + 1, 0.0);
    for (int64_t j = 0; j < n; ++j) hist[(order_key(vals[j]) >> shift) & mask] += weights ? weights[j] : 1.0;
    int64_t bin = mask;
    for (; bin >= 0 && above + hist[bin] < target; --bin) above += hist[bin];
    if (bin < 0) return kNegInf;
    int64_t m = 0;
    for (int64_t j = 0; j < n; ++j) {
      if (((order_key(vals[j]) >> shift) & mask) != static_cast<uint32_t>(bin)) continue;
      s.sel_v[m] = vals[j];
      if (weights) s.sel_w[m] = weights[j];
      ++m;
    }
    vals = s.sel_v.data();
    weights = weights ? s.sel_w.data() : nullptr;
    n = m;
  }
  return vals[0];  // every survivor has the same key, hence the same value
}

// First index of the row's maximum; NaN never wins, a row without a value above -inf gives 0. Two vectorized passes:
// the maximum (std::max(m, NaN) keeps m), then a block-wise search for its first occurrence.
template <typename T>
int64_t greedy_row(const T* logits, int64_t vocab) {
  float best = kNegInf;
#pragma omp simd reduction(max : best)
  for (int64_t i = 0; i < vocab; ++i) best = std::max(best, to_float(logits[i]));
  if (best == kNegInf) return 0;
  constexpr int64_t kBlock = 256;
  for (int64_t start = 0; start < vocab; start += kBlock) {
    const int64_t end = std::min(vocab, start + kBlock);
    int hit = 0;
#pragma omp simd reduction(| : hit)
    for (int64_t i = start; i < end; ++i) hit |= to_float(logits[i]) == best;
    if (!hit) continue;
    for (int64_t i = start; i < end; ++i) {
      if (to_float(logits[i]) == best) return i;
    }
  }
  return 0;
}

// The drawn token and, when asked for, its log-probability under the input and under the processed distribution.
struct Draw {
  int64_t token;
  float logprob, processed_logprob;
};

template <typename T>
Draw sample_row(const T* logits, int64_t vocab, float temperature, int64_t top_k, float top_p, float min_p,
                uint32_t key, bool with_logprobs, SampleScratch& s) {
  constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
  if (!(temperature > 0.0f)) {
    const int64_t token = greedy_row(logits, vocab);
    const float lp = with_logprobs ? row_log_normalizer(logits, vocab).at(sanitized(logits[token])) : kNaN;
    return {token, lp, lp};
  }
  float* x = s.x.data();
  float row_max = kNegInf;
  for (int64_t i = 0; i < vocab; ++i) {
    x[i] = sanitized(logits[i]) / temperature;
    row_max = std::max(row_max, x[i]);
  }
  // logit / T without a finite maximum (nothing finite, or an overflow): the input's logprob is still reported
  const auto input_logprob = [&](int64_t token) {
    return with_logprobs ? row_log_normalizer(logits, vocab).at(sanitized(logits[token])) : kNaN;
  };
  if (row_max == kNegInf) return {0, input_logprob(0), kNaN};
  const int64_t argmax = std::find(x, x + vocab, row_max) - x;
  if (row_max == kPosInf) return {argmax, input_logprob(argmax), kNaN};

  const float* cand = x;  // candidate values; ids are cand_id[j], or j when cand_id is null
  const int32_t* cand_id = nullptr;
  int64_t n = vocab;
  float tau = kNegInf;
  if (top_k > 0 && top_k < vocab) {
    tau = threshold_from_top(x, nullptr, vocab, static_cast<double>(top_k), s);
    n = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (x[i] < tau) continue;
      s.kept[n] = x[i];
      s.kept_id[n] = static_cast<int32_t>(i);
      ++n;
    }
    cand = s.kept.data();
    cand_id = s.kept_id.data();
  }
  const bool nucleus = top_p < 1.0f;
  const auto candidate = [cand](int64_t j) { return cand[j]; };
  if (nucleus) {
    const double z = exp_sum(n, row_max, candidate, s.weight.data());
    tau = std::max(tau, threshold_from_top(cand, s.weight.data(), n, static_cast<double>(top_p) * z, s));
  }

  float best = row_max + gumbel_from_bits(token_bits(key, static_cast<uint32_t>(argmax)));
  int64_t best_i = argmax;
  for (int64_t j = 0; j < n; ++j) {
    const float v = cand[j];
    if (v < tau) continue;
    const int64_t i = cand_id ? cand_id[j] : j;
    if (v + kGumbelMax < best) continue;
    const uint32_t bits = token_bits(key, static_cast<uint32_t>(i));
    if (min_p > 0.0f && exp_nonpositive(v - row_max) < min_p) continue;
    const float noisy = v + gumbel_from_bits(bits);
    if (noisy > best || (noisy == best && i < best_i)) { best = noisy; best_i = i; }
  }
  if (!with_logprobs) return {best_i, kNaN, kNaN};
  if (!nucleus) exp_sum(n, row_max, candidate, s.weight.data());
  double kept_mass = 0.0;  // the processed distribution's normaliser: exp(x - M) over the kept entries
  for (int64_t j = 0; j < n; ++j) {
    const float e = s.weight[j];
    if (cand[j] >= tau && !(min_p > 0.0f && e < min_p)) kept_mass += e;
  }
  return {best_i, row_log_normalizer(logits, vocab).at(sanitized(logits[best_i])),
          (x[best_i] - row_max) - static_cast<float>(std::log(kept_mass))};
}

// out[b] = the token drawn for row b of logits (batch, vocab); logprob / processed_logprob (both null, or both
// (batch,)) receive its log-probabilities under the input and the processed distributions.
template <typename T>
void sample_cpu(const T* logits, int64_t batch, int64_t vocab, const SampleParams& p, int64_t* out,
                float* logprob, float* processed_logprob) {
  const bool with_logprobs = logprob != nullptr;
#pragma omp parallel if (batch > 1)
  {
    SampleScratch scratch(vocab);
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < batch; ++b) {
      const Draw d = sample_row(logits + b * vocab, vocab, row_param(p.temperature, p.temperature_val, b),
                                row_param(p.top_k, p.top_k_val, b), row_param(p.top_p, p.top_p_val, b),
                                row_param(p.min_p, p.min_p_val, b), step_key(p.seeds[b], p.step), with_logprobs,
                                scratch);
      out[b] = d.token;
      if (with_logprobs) {
        logprob[b] = d.logprob;
        processed_logprob[b] = d.processed_logprob;
      }
    }
  }
}

}  // namespace pydecode
