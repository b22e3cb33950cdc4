// AVX2 + FMA inner loops of the KIVI CPU attention on packed tiles (see kivi/kernel.h for the layouts and the code-space
// formulation). Codes are shifted out of their words in registers and multiplied straight away: no decoded tile is
// written or read back. Chosen at run time (cpu_features.h); without AVX2 kivi/kernel.h's portable loops run.
#pragma once
#include <cstdint>

#include "pydecode/cpu_features.h"

#if PYDECODE_HAS_AVX2_KERNELS
#include <immintrin.h>

namespace pydecode {
namespace kivi {
namespace avx2 {

// The 16 codes that start at word *w0 (2 bits: all in *w0; 4 bits: 8 in *w0, 8 in *w1) as two vectors of 8 floats.
template <int NBITS>
PYDECODE_TARGET_AVX2 inline void codes16(const int32_t* w0, const int32_t* w1, __m256& lo, __m256& hi) {
  const __m256i mask = _mm256_set1_epi32((1 << NBITS) - 1);
  if constexpr (NBITS == 2) {
    const __m256i word = _mm256_set1_epi32(*w0);
    lo = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(word, _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14)), mask));
    hi = _mm256_cvtepi32_ps(
        _mm256_and_si256(_mm256_srlv_epi32(word, _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30)), mask));
  } else {
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    lo = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(*w0), shifts), mask));
    hi = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(*w1), shifts), mask));
  }
}

// s[r * G + j] = bias[r] + sum over d of qs[r * D + d] * code(j, d) for the G tokens of a packed key tile whose word
// (w, d) is words[w * D + d] (tokens w * F .. w * F + F - 1 of channel d, F = 32 / NBITS).
template <int NBITS, int RB>
PYDECODE_TARGET_AVX2 inline void key_scores(const int32_t* words, const float* qs, const float* bias, int64_t D,
                                            int64_t G, float* s) {
  constexpr int64_t F = 32 / NBITS;
  for (int64_t j0 = 0; j0 < G; j0 += 16) {
    const int32_t* w0 = words + (j0 / F) * D;
    const int32_t* w1 = NBITS == 4 ? w0 + D : w0;
    __m256 acc[RB][2];
    for (int r = 0; r < RB; ++r) acc[r][0] = acc[r][1] = _mm256_set1_ps(bias[r]);
    for (int64_t d = 0; d < D; ++d) {
      __m256 lo, hi;
      codes16<NBITS>(w0 + d, w1 + d, lo, hi);
      for (int r = 0; r < RB; ++r) {
        const __m256 q = _mm256_broadcast_ss(qs + r * D + d);
        acc[r][0] = _mm256_fmadd_ps(q, lo, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(q, hi, acc[r][1]);
      }
    }
    for (int r = 0; r < RB; ++r) {
      _mm256_storeu_ps(s + r * G + j0, acc[r][0]);
      _mm256_storeu_ps(s + r * G + j0 + 8, acc[r][1]);
    }
  }
}

// acc[r * D + d] += bz[r * P + d / G] + sum over live tokens j < n of ws[(r * P + d / G) * G + j] * code(j, d) for a
// packed value tile whose token j holds its D / F words at words[j * (D / F)], P = D / G.
template <int NBITS, int RB>
PYDECODE_TARGET_AVX2 inline void value_sums(const int32_t* words, const float* ws, const float* bz, const char* live,
                                            int64_t D, int64_t G, int64_t n, float* acc) {
  constexpr int64_t F = 32 / NBITS;
  const int64_t P = D / G, per_token = D / F;
  for (int64_t d0 = 0; d0 < D; d0 += 16) {
    const int64_t g = d0 / G;
    __m256 block[RB][2];
    for (int r = 0; r < RB; ++r) {
      const __m256 z = _mm256_set1_ps(bz[r * P + g]);
      block[r][0] = _mm256_add_ps(_mm256_loadu_ps(acc + r * D + d0), z);
      block[r][1] = _mm256_add_ps(_mm256_loadu_ps(acc + r * D + d0 + 8), z);
    }
    const int32_t* wd = words + d0 / F;
    for (int64_t j = 0; j < n; ++j) {
      if (!live[j]) continue;
      __m256 lo, hi;
      codes16<NBITS>(wd + j * per_token, wd + j * per_token + 1, lo, hi);
      for (int r = 0; r < RB; ++r) {
        const __m256 w = _mm256_broadcast_ss(ws + (r * P + g) * G + j);
        block[r][0] = _mm256_fmadd_ps(w, lo, block[r][0]);
        block[r][1] = _mm256_fmadd_ps(w, hi, block[r][1]);
      }
    }
    for (int r = 0; r < RB; ++r) {
      _mm256_storeu_ps(acc + r * D + d0, block[r][0]);
      _mm256_storeu_ps(acc + r * D + d0 + 8, block[r][1]);
    }
  }
}

}  // namespace avx2
}  // namespace kivi
}  // namespace pydecode
#endif
