// Optional x86 instruction sets of the CPU kernels, chosen at run time: the extension is built for the baseline
// x86-64 (SSE2) and carries AVX2 + FMA variants of its hottest loops (function-level target attributes), used when
// the CPU has them and the caller has not asked for the baseline (set_cpu_isa, for tests and comparisons); likewise
// AVX-512 BF16 variants where bfloat16 data has them.
#pragma once
#include <atomic>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PYDECODE_HAS_AVX2_KERNELS 1
#define PYDECODE_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PYDECODE_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))
#else
#define PYDECODE_HAS_AVX2_KERNELS 0
#endif

namespace pydecode {

inline std::atomic<bool> avx2_allowed{true};

// True when the AVX2 + FMA variants run: built in, supported by this CPU, and not switched off.
inline bool use_avx2() {
#if PYDECODE_HAS_AVX2_KERNELS
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported && avx2_allowed.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

// True when the AVX-512 BF16 variants (bfloat16 dot products) run: built in, supported, and not switched off.
inline bool use_avx512_bf16() {
#if PYDECODE_HAS_AVX2_KERNELS
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512bf16");
  return supported && avx2_allowed.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

}  // namespace pydecode
