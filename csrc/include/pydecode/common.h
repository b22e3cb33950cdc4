// Shared by the CPU (kernel.h) and CUDA (kernel.cuh) kernels of csrc/<op>/: the counter-based random stream of
// pydecode/ops/random.py (every backend computes the same 32-bit words), order keys, per-row parameters.
#pragma once
#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define PYDECODE_HD __host__ __device__ __forceinline__
#else
#define PYDECODE_HD inline
#endif

namespace pydecode {

PYDECODE_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

// Per-row key of one decode step.
PYDECODE_HD uint32_t step_key(int64_t seed, int64_t step) {
  const uint64_t s = static_cast<uint64_t>(seed);
  const uint32_t row_key = mix32(mix32(static_cast<uint32_t>(s >> 32) ^ 0x9E3779B9u) ^ static_cast<uint32_t>(s));
  return mix32(row_key ^ mix32(static_cast<uint32_t>(step) ^ 0x85EBCA6Bu));
}

PYDECODE_HD uint32_t token_bits(uint32_t key, uint32_t token) { return mix32(key ^ mix32(token ^ 0xC2B2AE35u)); }

// float32 arithmetic as the reference: 23 bits, so m + 0.5f is exact and u lies in (0, 1): at most 1 - 2^-24.
PYDECODE_HD float uniform_from_bits(uint32_t bits) {
  return (static_cast<float>(bits >> 9) + 0.5f) * 1.1920928955078125e-7f;
}

// -log(-log(u)) with each log evaluated in double and rounded to float (a correctly rounded logf, in effect, and
// immune to nvcc --use_fast_math, which only swaps the float functions).
PYDECODE_HD float gumbel_from_bits(uint32_t bits) {
  const float e = static_cast<float>(-log(static_cast<double>(uniform_from_bits(bits))));
  return static_cast<float>(-log(static_cast<double>(e)));
}

// Above the largest gumbel_from_bits value (u = 1 - 2^-24 gives 16.64): a token whose logit + this is below the best
// noisy value so far cannot win, so its random bits need not be computed.
constexpr float kGumbelMax = 17.0f;

// Order-preserving map of a non-NaN float to uint32 (larger float -> larger key). -0.0 gets the key of +0.0: they
// compare equal, so a select on keys must not split them (a top-k cut through a row of signed zeros would).
PYDECODE_HD uint32_t order_key(float x) {
  uint32_t u;
#ifdef __CUDA_ARCH__
  u = __float_as_uint(x);
#else
  __builtin_memcpy(&u, &x, sizeof(u));
#endif
  if (u == 0x80000000u) u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Parameter that is a scalar for every row or an array of shape (B,).
template <typename T>
PYDECODE_HD T row_param(const T* arr, T scalar, int64_t row) { return arr ? arr[row] : scalar; }

PYDECODE_HD float float_from_key(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
  float x;
#ifdef __CUDA_ARCH__
  x = __uint_as_float(u);
#else
  __builtin_memcpy(&x, &u, sizeof(x));
#endif
  return x;
}

// Per-row parameters of the sampler: each pointer is null (use the scalar) or an array of shape (B,).
struct SampleParams {
  const float* temperature; float temperature_val;
  const int32_t* top_k; int32_t top_k_val;  // <= 0 or >= vocab: off
  const float* top_p; float top_p_val;      // >= 1: off
  const float* min_p; float min_p_val;      // 0: off
  const int64_t* seeds;
  int64_t step;
};

}  // namespace pydecode
