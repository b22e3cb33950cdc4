// Few-row linear layer on the CPU, y (M, N) = x (M, K) @ w (N, K)^T (semantics of pydecode/ops/linear/reference.py,
// without the bias), for decoding steps: M is the number of rows decoded at once (1 to a few dozen), so the layer is
// bound by reading w once. Each task takes a block of 4 weight rows and runs every input row past it in register
// tiles of 4 weight rows x up to 3 input rows (the weight block stays in L1 while the input rows stream), one float32
// accumulator per lane, then a horizontal sum. x and w are float32, or both bfloat16 (raw 16-bit patterns: products
// exact, sums in float32); y is float32. Rows row-major and contiguous.
#pragma once
#include <cstdint>
#include <cstring>

#include "pydecode/cpu_features.h"

#if PYDECODE_HAS_AVX2_KERNELS
#include <immintrin.h>
#endif

namespace pydecode {
namespace linear {

constexpr int64_t kRowBlock = 4;  // weight rows per task and per register tile

inline float to_float(float v) { return v; }
inline float to_float(uint16_t bf16) {  // a bfloat16 is the top half of a float32
  const uint32_t bits = uint32_t(bf16) << 16;
  float v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// y[j * ldy + i] = sum_k w[i * K + k] * x[j * K + k] for the NB weight rows and MB input rows of one tile (portable).
template <int NB, int MB, typename T>
inline void tile_portable(const T* x, const T* w, int64_t K, float* y, int64_t ldy) {
  float acc[NB][MB] = {};
  for (int64_t k = 0; k < K; ++k) {
    for (int i = 0; i < NB; ++i) {
      for (int j = 0; j < MB; ++j) acc[i][j] += to_float(w[i * K + k]) * to_float(x[j * K + k]);
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

// The float32 tile with 8-lane FMA accumulators (NB * MB of them) and a scalar tail for K % 8.
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

// The bfloat16 tile: AVX-512 BF16 dot products, 32 pairs into 16 float32 lanes per instruction; the K % 32 tail
// through masked loads (zeros beyond K add nothing).
template <int NB, int MB>
PYDECODE_TARGET_AVX512_BF16 inline void tile_bf16_avx512(const uint16_t* x, const uint16_t* w, int64_t K, float* y,
                                                         int64_t ldy) {
  __m512 acc[NB][MB];
  for (int i = 0; i < NB; ++i) {
    for (int j = 0; j < MB; ++j) acc[i][j] = _mm512_setzero_ps();
  }
  for (int64_t k = 0; k < K; k += 32) {
    const __mmask32 lanes = K - k >= 32 ? ~__mmask32(0) : (__mmask32(1) << (K - k)) - 1;
    __m512bh xv[MB];
    for (int j = 0; j < MB; ++j) xv[j] = (__m512bh)_mm512_maskz_loadu_epi16(lanes, x + j * K + k);
    for (int i = 0; i < NB; ++i) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(lanes, w + i * K + k);
      for (int j = 0; j < MB; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv, xv[j]);
    }
  }
  for (int i = 0; i < NB; ++i) {
    for (int j = 0; j < MB; ++j) y[j * ldy + i] = _mm512_reduce_add_ps(acc[i][j]);
  }
}
#endif

enum class Isa { kPortable, kAvx2, kAvx512Bf16 };

// One tile of NB weight rows x MB input rows with the instruction set ISA (float32 for kAvx2, bfloat16 for
// kAvx512Bf16).
template <int NB, int MB, Isa ISA, typename T>
inline void tile(const T* x, const T* w, int64_t K, float* y, int64_t ldy) {
#if PYDECODE_HAS_AVX2_KERNELS
  if constexpr (ISA == Isa::kAvx2) {
    tile_avx2<NB, MB>(x, w, K, y, ldy);
    return;
  } else if constexpr (ISA == Isa::kAvx512Bf16) {
    tile_bf16_avx512<NB, MB>(x, w, K, y, ldy);
    return;
  }
#endif
  tile_portable<NB, MB>(x, w, K, y, ldy);
}

// Every input row past NB weight rows starting at w (output columns start at y), in tiles of 3, then 1 input rows.
template <int NB, Isa ISA, typename T>
inline void weight_block(const T* x, int64_t M, const T* w, int64_t K, float* y, int64_t N) {
  int64_t m = 0;
  for (; m + 3 <= M; m += 3) tile<NB, 3, ISA>(x + m * K, w, K, y + m * N, N);
  for (; m < M; ++m) tile<NB, 1, ISA>(x + m * K, w, K, y + m * N, N);
}

// Weight rows [first, last) of y = x @ w^T: whole blocks of kRowBlock, then the remaining rows one by one.
template <Isa ISA, typename T>
inline void weight_rows(const T* x, int64_t M, const T* w, int64_t K, float* y, int64_t N, int64_t first,
                        int64_t last) {
  int64_t n = first;
  for (; n + kRowBlock <= last; n += kRowBlock) weight_block<kRowBlock, ISA>(x, M, w + n * K, K, y + n, N);
  for (; n < last; ++n) weight_block<1, ISA>(x, M, w + n * K, K, y + n, N);
}

}  // namespace linear
}  // namespace pydecode
