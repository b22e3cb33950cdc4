// A row of logits on the CPU kernels' side: the 16-bit storage types, their conversion to float, NaN as -inf,
// and the log-softmax normaliser (shared by top_k_top_p_sample, token_logprobs and degeneration_score).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "pydecode/cpu_math.h"

namespace pydecode {

struct Half { uint16_t bits; };      // IEEE binary16 storage, layout-compatible with at::Half
struct BFloat16 { uint16_t bits; };  // bfloat16 storage, layout-compatible with at::BFloat16

inline float to_float(float x) { return x; }
inline float to_float(BFloat16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}
inline float to_float(Half x) {
  const uint32_t sign = static_cast<uint32_t>(x.bits & 0x8000u) << 16;
  const uint32_t exponent = (x.bits >> 10) & 0x1Fu, mantissa = x.bits & 0x3FFu;
  uint32_t u;
  if (exponent == 0x1F) {
    u = sign | 0x7F800000u | (mantissa << 13);
  } else if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float f = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -f : f;
  } else {
    u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  }
  float f;
  __builtin_memcpy(&f, &u, sizeof(f));
  return f;
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

template <typename T>
inline float sanitized(T raw) {
  const float x = to_float(raw);
  return std::isnan(x) ? kNegInf : x;
}

// log_softmax(row)[i] = (x_i - max) - log_z, in that order: max + log_z rounded at max's scale would lose float32
// ulps of a large logit. NaN log_z when no logit is finite or one is +inf (as log_softmax gives).
struct LogNormalizer {
  float max, log_z;
  float at(float x) const { return (x - max) - log_z; }
};

template <typename T>
LogNormalizer row_log_normalizer(const T* logits, int64_t vocab) {
  float row_max = kNegInf;  // std::max(m, NaN) keeps m, and exp_nonpositive counts NaN as -inf: no sanitizing needed
#pragma omp simd reduction(max : row_max)
  for (int64_t i = 0; i < vocab; ++i) row_max = std::max(row_max, to_float(logits[i]));
  if (!std::isfinite(row_max)) return {row_max, std::numeric_limits<float>::quiet_NaN()};
  const double z = exp_sum(vocab, row_max, [logits](int64_t i) { return to_float(logits[i]); });
  return {row_max, static_cast<float>(std::log(z))};
}

}  // namespace pydecode
