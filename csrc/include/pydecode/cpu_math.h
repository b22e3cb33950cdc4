// Float math for the CPU kernels' passes over a row (a vocabulary, a tile of attention scores), written without libm
// calls or branches so that the loops using it vectorize (SSE2 is enough; no -march or -ffast-math needed).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__GNUC__)
#define PYDECODE_ALWAYS_INLINE inline __attribute__((always_inline))  // the vectorizer needs the body in the loop
#else
#define PYDECODE_ALWAYS_INLINE inline
#endif

namespace pydecode {

// Below this, e^x counts as e^-87 (1.6e-38), negligible next to the e^0 = 1 of a row's maximum; n stays >= -126.
constexpr float kExpLowest = -87.0f;
// The same bound read at run time: with a compile-time bound GCC splits the clamped path off as a branch (everything
// after the clamp folds to a constant) and the loop no longer vectorizes.
inline volatile float exp_lowest_opaque = kExpLowest;

// e^x for x <= 0 within 1 ulp; x below `lowest` (NaN too) counts as `lowest`. Range reduction x = n ln2 + r with
// |r| <= ln2 / 2, a degree-7 polynomial for e^r (Cephes' single-precision coefficients), 2^n built in the exponent bits.
PYDECODE_ALWAYS_INLINE float exp_nonpositive(float x, float lowest = kExpLowest) {
  x = std::max(lowest, x);  // std::max(a, b) is (a < b) ? b : a, so NaN gives `lowest`
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding then subtracting it rounds to the nearest integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 split in two for an exact product
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e_r = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return e_r * two_n;
}

// sum over i < n of e^(value(i) - shift), every value(i) <= shift, each term also stored in out[i] when out is given:
// float sums over blocks (vectorized), added in double so the rounding error stays near float epsilon at any n.
template <typename Value>
double exp_sum(int64_t n, float shift, Value value, float* out = nullptr) {
  constexpr int64_t kBlock = 1024;
  const float lowest = exp_lowest_opaque;
  double total = 0.0;
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t end = start + kBlock < n ? start + kBlock : n;
    float block = 0.0f;
    if (out == nullptr) {
#pragma omp simd reduction(+ : block)
      for (int64_t i = start; i < end; ++i) block += exp_nonpositive(value(i) - shift, lowest);
    } else {
#pragma omp simd reduction(+ : block)
      for (int64_t i = start; i < end; ++i) block += out[i] = exp_nonpositive(value(i) - shift, lowest);
    }
    total += block;
  }
  return total;
}

}  // namespace pydecode
