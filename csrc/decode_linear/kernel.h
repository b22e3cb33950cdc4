// Few-row linear layer on the CPU, y (M, N) = x (M, K) @ w (N, K)^T + b (semantics of
// pydecode/ops/linear/reference.py), for decoding steps: M is the number of rows decoded at once (1 to a few dozen),
// so the layer is bound by reading w once. Each task takes a block of 4 weight rows and runs every input row past it
// in register tiles of 4 weight rows x up to 3 input rows (the weight block stays in L1 while the input rows stream),
// one float32 accumulator per lane, then a horizontal sum. float32 only; rows row-major and contiguous.
#pragma once
#include <cstdint>

#include "pydecode/cpu_features.h"

#if PYDECODE_HAS_AVX2_KERNELS
#include <immintrin.h>
#endif

namespace pydecode {
namespace linear {

constexpr int64_t kRowBlock = 4;  // weight rows per task and per register tile

// y[j * ldy + i] = sum_k w[i * K + k] * x[j * K + k] for the NB weight rows and MB input rows of one tile (portable).
template <int NB, int MB>
inline void tile_portable(const float* x, const float* w, int64_t K, float* y, int64_t ldy) {
  float acc[NB][MB] = {};
  for (int64_t k = 0; k < K; ++k) {
    for (int i = 0; i < NB; ++i) {
      for (int j = 0; j < MB; ++j) acc[i][j] += w[i * K + k] * x[j * K + k];
    }
  }
  for (int i = 0; i < NB; ++i) {
    for (int j = 0; j < MB; ++j) y[j * ldy + i] = acc[i][j];
  }
}

#if PYDECODE_HAS_AVX2_KERNELS
PYDECODE_TARGET_AVX2 inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The same tile with 8-lane FMA accumulators (NB * MB of them) and a scalar tail for K % 8.
template <int NB, int MB>
PYDECODE_TARGET_AVX2 inline void tile_avx2(const float* x, const float* w, int64_t K, float* y, int64_t ldy) {
  __m256 acc[NB][MB];
  for (int i = 0; i < NB; ++i) {
    for (int j = 0; j < MB; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 xv[MB];
    for (int j = 0; j < MB; ++j) xv[j] = _mm256_loadu_ps(x + j * K + k);
    for (int i = 0; i < NB; ++i) {
      const __m256 wv = _mm256_loadu_ps(w + i * K + k);
      for (int j = 0; j < MB; ++j) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < NB; ++i) {
    for (int j = 0; j < MB; ++j) {
      float s = horizontal_sum(acc[i][j]);
      for (int64_t t = k; t < K; ++t) s += w[i * K + t] * x[j * K + t];
      y[j * ldy + i] = s;
    }
  }
}
#endif

// Every input row past NB weight rows starting at w (output columns start at y), in tiles of 3, 2, 1 input rows.
template <int NB, bool AVX2>
inline void weight_block(const float* x, int64_t M, const float* w, int64_t K, float* y, int64_t N) {
  int64_t m = 0;
#if PYDECODE_HAS_AVX2_KERNELS
  if constexpr (AVX2) {
    for (; m + 3 <= M; m += 3) tile_avx2<NB, 3>(x + m * K, w, K, y + m * N, N);
    for (; m < M; ++m) tile_avx2<NB, 1>(x + m * K, w, K, y + m * N, N);
    return;
  }
#endif
  for (; m + 3 <= M; m += 3) tile_portable<NB, 3>(x + m * K, w, K, y + m * N, N);
  for (; m < M; ++m) tile_portable<NB, 1>(x + m * K, w, K, y + m * N, N);
}

// Weight rows [first, last) of y = x @ w^T (no bias): whole blocks of kRowBlock, then the remaining rows one by one.
template <bool AVX2>
inline void weight_rows(const float* x, int64_t M, const float* w, int64_t K, float* y, int64_t N, int64_t first,
                        int64_t last) {
  int64_t n = first;
  for (; n + kRowBlock <= last; n += kRowBlock) weight_block<kRowBlock, AVX2>(x, M, w + n * K, K, y + n, N);
  for (; n < last; ++n) weight_block<1, AVX2>(x, M, w + n * K, K, y + n, N);
}

}  // namespace linear
}  // namespace pydecode
