// KIVI CUDA kernels on raw pointers + stream (no torch): quantize + pack, and flash-decoding attention on the packed
// cache. Layouts and contracts: pydecode/ops/kivi/reference.py and kivi/kernel.h (the CPU twin).
//
// Attention: one block per (batch x kv head, sequence split, chunk of kRows query rows). The query rows of every
// query head sharing the kv head (GQA) read each packed tile once. Per tile of G tokens (one key group):
//   1. scores: each warp takes tokens, its lanes split head_dim, dequantizing the key codes in registers;
//   2. online softmax per row (one thread per row);
//   3. values: each thread owns channels, dequantizes the value codes it needs and accumulates p * v.
// Splits write (max, sum, acc) partials that kivi_merge_kernel combines.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace pydecode {
namespace kivi_cuda {

constexpr int kThreads = 128;  // 4 warps
constexpr int kRows = 8;       // query rows per block
constexpr int kMaxDim = 256;   // head_dim limit: at most kMaxDim / kThreads channels per thread

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Stores the rounded scale/zero of a group with float min/max lo/hi; returns them as float in s, z.
template <typename M>
__device__ __forceinline__ void group_meta(float lo, float hi, int nbits, M* scale, M* zero, float& s, float& z) {
  const M sm = from_float<M>(__fdiv_rn(hi - lo, static_cast<float>((1 << nbits) - 1)));
  const M zm = from_float<M>(lo);
  *scale = sm;
  *zero = zm;
  s = to_float(sm);
  z = to_float(zm);
}

// floor(y + 0.5) clamped to the code range (IEEE division: the CPU and Triton kernels give the same codes).
__device__ __forceinline__ uint32_t quantize_code(float x, float s, float z, int nbits) {
  if (!(s > 0.0f)) return 0u;
  const float c = floorf(__fdiv_rn(x - z, s) + 0.5f);
  return static_cast<uint32_t>(fminf(fmaxf(c, 0.0f), static_cast<float>((1 << nbits) - 1)));
}

// One thread per (b*h, key group, channel).
template <typename T, typename M>
__global__ void kivi_pack_keys_kernel(const T* __restrict__ x, const bool* __restrict__ valid,
                                      int32_t* __restrict__ codes, M* __restrict__ scale, M* __restrict__ zero,
                                      int64_t heads, int64_t tokens, int64_t dim, int nbits, int group,
                                      int64_t n_threads) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n_threads) return;
  const int64_t groups = tokens / group, d = i % dim, g = (i / dim) % groups, bh = i / (dim * groups);
  const int per_word = 32 / nbits;
  const T* xg = x + (bh * tokens + g * group) * dim + d;
  const bool* ok = valid ? valid + (bh / heads) * tokens + g * group : nullptr;
  float lo = INFINITY, hi = -INFINITY;
  for (int t = 0; t < group; ++t) {
    if (ok && !ok[t]) continue;
    const float v = to_float(xg[t * dim]);
    lo = fminf(lo, v);
    hi = fmaxf(hi, v);
  }
  if (isinf(lo)) lo = hi = 0.0f;  // the whole group is padding
  float s, z;
  group_meta(lo, hi, nbits, scale + (bh * groups + g) * dim + d, zero + (bh * groups + g) * dim + d, s, z);
  int32_t* cg = codes + (bh * (tokens / per_word) + g * (group / per_word)) * dim + d;
  for (int w = 0; w < group / per_word; ++w) {
    uint32_t word = 0;
    for (int j = 0; j < per_word; ++j) word |= quantize_code(to_float(xg[(w * per_word + j) * dim]), s, z, nbits) << (j * nbits);
    cg[w * dim] = static_cast<int32_t>(word);
  }
}

// One thread per (token row of B*H*T, channel group).
template <typename T, typename M>
__global__ void kivi_pack_values_kernel(const T* __restrict__ x, int32_t* __restrict__ codes, M* __restrict__ scale,
                                        M* __restrict__ zero, int64_t rows, int64_t dim, int nbits, int group) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t groups = dim / group;
  if (i >= rows * groups) return;
  const int64_t r = i / groups, g = i % groups;
  const int per_word = 32 / nbits;
  const T* xg = x + r * dim + g * group;
  float lo = INFINITY, hi = -INFINITY;
  for (int c = 0; c < group; ++c) {
    lo = fminf(lo, to_float(xg[c]));
    hi = fmaxf(hi, to_float(xg[c]));
  }
  float s, z;
  group_meta(lo, hi, nbits, scale + i, zero + i, s, z);
  int32_t* cw = codes + r * (dim / per_word) + g * (group / per_word);
  for (int w = 0; w < group / per_word; ++w) {
    uint32_t word = 0;
    for (int j = 0; j < per_word; ++j) word |= quantize_code(to_float(xg[w * per_word + j]), s, z, nbits) << (j * nbits);
    cw[w] = static_cast<int32_t>(word);
  }
}

template <typename T, typename M>
cudaError_t kivi_pack_cuda(const T* x, const bool* valid, int32_t* codes, M* scale, M* zero, int64_t batch,
                           int64_t heads, int64_t tokens, int64_t dim, int nbits, int group, bool per_channel,
                           cudaStream_t stream) {
  const int64_t n = per_channel ? batch * heads * (tokens / group) * dim : batch * heads * tokens * (dim / group);
  if (n == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  if (per_channel) {
    kivi_pack_keys_kernel<T, M><<<blocks, kThreads, 0, stream>>>(x, valid, codes, scale, zero, heads, tokens, dim,
                                                                  nbits, group, n);
  } else {
    kivi_pack_values_kernel<T, M><<<blocks, kThreads, 0, stream>>>(x, codes, scale, zero, batch * heads * tokens,
                                                                    dim, nbits, group);
  }
  return cudaGetLastError();
}

// Everything the attention reads; the packed stores hold `capacity` tokens, the residual `residual_capacity`.
template <typename T, typename M>
struct AttentionParams {
  const T* query;  // (B, Hq, Q, D)
  const int32_t* key_codes; const M* key_scale; const M* key_zero;
  const int32_t* value_codes; const M* value_scale; const M* value_zero;
  const T* residual_keys; const T* residual_values;  // (B, Hkv, residual_capacity, D)
  const bool* mask;  // (B, Q, n_quant + n_residual), true = attend; null = causal aligned to the last key
  T* out;            // (B, Hq, Q, D)
  int64_t batch, q_heads, kv_heads, q_len, dim, capacity, residual_capacity, n_quant, n_residual;
  float scale;
  int nbits, group;
};

// Partials: m, l (B*Hkv, splits, rows_padded), acc (B*Hkv, splits, rows_padded, D); rows_padded = chunks * kRows.
template <typename T, typename M>
__global__ void __launch_bounds__(kThreads) kivi_split_kernel(AttentionParams<T, M> p, int64_t per_split,
                                                              float* __restrict__ part_m, float* __restrict__ part_l,
                                                              float* __restrict__ part_acc) {
  extern __shared__ float smem[];
  const int D = static_cast<int>(p.dim), G = p.group, F = 32 / p.nbits;
  const uint32_t code_mask = (1u << p.nbits) - 1u;
  const int64_t bh = blockIdx.x, b = bh / p.kv_heads, h = bh % p.kv_heads;
  const int64_t split = blockIdx.y, splits = gridDim.y, chunk = blockIdx.z;
  const int64_t rep = p.q_heads / p.kv_heads, total_rows = rep * p.q_len, n_total = p.n_quant + p.n_residual;
  const int64_t row0 = chunk * kRows;
  const int rows = static_cast<int>(min64(kRows, total_rows - row0));
  float* q_s = smem;                  // kRows * D
  float* score_s = q_s + kRows * D;   // kRows * G
  float* meta_s = score_s + kRows * G;  // 2 * D: key scale, key zero of the tile's group
  float* alpha_s = meta_s + 2 * D;    // kRows
  float* m_s = alpha_s + kRows;       // kRows
  float* l_s = m_s + kRows;           // kRows
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  const T* q_src = p.query + ((b * p.q_heads + h * rep) * p.q_len + row0) * D;
  for (int i = tid; i < kRows * D; i += kThreads) q_s[i] = i < rows * D ? to_float(q_src[i]) * p.scale : 0.0f;
  if (tid < kRows) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.0f;
  }
  constexpr int kPerThread = kMaxDim / kThreads;
  float acc[kRows][kPerThread];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) acc[r][c] = 0.0f;
  }
  __syncthreads();

  const int64_t begin = split * per_split, end = min64(n_total, begin + per_split);
  for (int64_t t0 = begin; t0 < end; t0 += G) {
    const int n = static_cast<int>(min64(G, end - t0));
    const bool packed = t0 < p.n_quant;
    if (packed) {
      const int64_t meta = (bh * (p.capacity / G) + t0 / G) * D;
      for (int d = tid; d < D; d += kThreads) {
        meta_s[d] = to_float(p.key_scale[meta + d]);
        meta_s[D + d] = to_float(p.key_zero[meta + d]);
      }
      __syncthreads();
    }
    // 1. scores of the tile
    for (int j = warp; j < n; j += kThreads / 32) {
      float dot[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) dot[r] = 0.0f;
      const int64_t t = t0 + j;
      for (int d = lane; d < D; d += 32) {
        float k;
        if (packed) {
          const uint32_t word = static_cast<uint32_t>(p.key_codes[(bh * (p.capacity / F) + t / F) * D + d]);
          k = static_cast<float>((word >> ((t % F) * p.nbits)) & code_mask) * meta_s[d] + meta_s[D + d];
        } else {
          k = to_float(p.residual_keys[(bh * p.residual_capacity + (t - p.n_quant)) * D + d]);
        }
#pragma unroll
        for (int r = 0; r < kRows; ++r) dot[r] += q_s[r * D + d] * k;
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        for (int off = 16; off > 0; off >>= 1) dot[r] += __shfl_xor_sync(0xffffffffu, dot[r], off);
      }
      if (lane < rows) {
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < kRows; ++r) s = r == lane ? dot[r] : s;
        const int64_t qi = (row0 + lane) % p.q_len;
        const bool ok = p.mask ? p.mask[(b * p.q_len + qi) * n_total + t] : t <= n_total - p.q_len + qi;
        score_s[lane * G + j] = ok ? s : -INFINITY;
      }
    }
    __syncthreads();
    // 2. online softmax, one thread per row
    if (tid < rows) {
      float tile_max = -INFINITY;
      for (int j = 0; j < n; ++j) tile_max = fmaxf(tile_max, score_s[tid * G + j]);
      const float m_old = m_s[tid], m_new = fmaxf(m_old, tile_max);
      const float m_safe = isinf(m_new) ? 0.0f : m_new;
      float sum = 0.0f;
      for (int j = 0; j < n; ++j) {
        const float w = __expf(score_s[tid * G + j] - m_safe);
        score_s[tid * G + j] = w;
        sum += w;
      }
      const float alpha = __expf(m_old - m_safe);
      alpha_s[tid] = alpha;
      l_s[tid] = l_s[tid] * alpha + sum;
      m_s[tid] = m_new;
    } else if (tid < kRows) {  // padding rows of the last chunk: keep their accumulators at zero
      alpha_s[tid] = 0.0f;
      for (int j = 0; j < n; ++j) score_s[tid * G + j] = 0.0f;
    }
    __syncthreads();
    // 3. acc = acc * alpha + p @ v
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) {
      const int d = tid + c * kThreads;
      if (d >= D) continue;
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r][c] *= alpha_s[r];
      for (int j = 0; j < n; ++j) {
        const int64_t t = t0 + j;
        float v;
        if (packed) {
          const int64_t tok = bh * p.capacity + t;
          const uint32_t word = static_cast<uint32_t>(p.value_codes[tok * (D / F) + d / F]);
          const int64_t meta = tok * (D / G) + d / G;
          v = static_cast<float>((word >> ((d % F) * p.nbits)) & code_mask) * to_float(p.value_scale[meta]) +
              to_float(p.value_zero[meta]);
        } else {
          v = to_float(p.residual_values[(bh * p.residual_capacity + (t - p.n_quant)) * D + d]);
        }
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r][c] += score_s[r * G + j] * v;
      }
    }
    __syncthreads();
  }
  const int64_t padded = gridDim.z * kRows;
  const int64_t base = (bh * splits + split) * padded + row0;
  if (tid < kRows) {
    part_m[base + tid] = m_s[tid];
    part_l[base + tid] = l_s[tid];
  }
#pragma unroll
  for (int c = 0; c < kPerThread; ++c) {
    const int d = tid + c * kThreads;
    if (d >= D) continue;
#pragma unroll
    for (int r = 0; r < kRows; ++r) part_acc[(base + r) * D + d] = acc[r][c];
  }
}

// One block per (b*h kv, query row): merge the splits' partials into the output row.
template <typename T, typename M>
__global__ void kivi_merge_kernel(AttentionParams<T, M> p, int64_t splits, int64_t padded,
                                  const float* __restrict__ part_m, const float* __restrict__ part_l,
                                  const float* __restrict__ part_acc) {
  const int64_t bh = blockIdx.x, row = blockIdx.y, D = p.dim;
  const int64_t b = bh / p.kv_heads, h = bh % p.kv_heads, rep = p.q_heads / p.kv_heads;
  float m = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) m = fmaxf(m, part_m[(bh * splits + s) * padded + row]);
  const float m_safe = isinf(m) ? 0.0f : m;
  float l = 0.0f;
  for (int64_t s = 0; s < splits; ++s) {
    const int64_t i = (bh * splits + s) * padded + row;
    l += __expf(part_m[i] - m_safe) * part_l[i];
  }
  T* out = p.out + ((b * p.q_heads + h * rep) * p.q_len + row) * D;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t s = 0; s < splits; ++s) {
      const int64_t i = (bh * splits + s) * padded + row;
      acc += __expf(part_m[i] - m_safe) * part_acc[i * D + d];
    }
    out[d] = from_float<T>(l > 0.0f ? acc / l : 0.0f);
  }
}

// Floats of workspace kivi_attention_cuda needs (partials for every split and padded query row).
inline int64_t attention_workspace_floats(int64_t batch, int64_t q_heads, int64_t kv_heads, int64_t q_len,
                                          int64_t dim, int64_t splits) {
  const int64_t chunks = (q_heads / kv_heads * q_len + kRows - 1) / kRows;
  return batch * kv_heads * splits * chunks * kRows * (dim + 2);
}

// `splits` sequence splits, each a whole number of groups; workspace: attention_workspace_floats(...) floats.
template <typename T, typename M>
cudaError_t kivi_attention_cuda(const AttentionParams<T, M>& p, int64_t splits, float* workspace,
                                cudaStream_t stream) {
  if (p.dim > kMaxDim || p.group > 128) return cudaErrorInvalidValue;
  if (p.batch == 0 || p.q_len == 0) return cudaSuccess;  // nothing to compute; an empty grid is a launch error
  const int64_t n_total = p.n_quant + p.n_residual;
  const int64_t per_split = ((n_total + splits - 1) / splits + p.group - 1) / p.group * p.group;
  splits = per_split > 0 ? (n_total + per_split - 1) / per_split : 1;
  const int64_t chunks = (p.q_heads / p.kv_heads * p.q_len + kRows - 1) / kRows, padded = chunks * kRows;
  const int64_t n_parts = p.batch * p.kv_heads * splits * padded;
  float* part_m = workspace;
  float* part_l = part_m + n_parts;
  float* part_acc = part_l + n_parts;
  const size_t smem = sizeof(float) * (kRows * p.dim + kRows * p.group + 2 * p.dim + 3 * kRows);
  const dim3 grid(static_cast<unsigned>(p.batch * p.kv_heads), static_cast<unsigned>(splits),
                  static_cast<unsigned>(chunks));
  kivi_split_kernel<T, M><<<grid, kThreads, smem, stream>>>(p, per_split > 0 ? per_split : p.group, part_m, part_l,
                                                            part_acc);
  const dim3 merge_grid(static_cast<unsigned>(p.batch * p.kv_heads),
                        static_cast<unsigned>(p.q_heads / p.kv_heads * p.q_len));
  kivi_merge_kernel<T, M><<<merge_grid, kThreads, 0, stream>>>(p, splits, padded, part_m, part_l, part_acc);
  return cudaGetLastError();
}

}  // namespace kivi_cuda
}  // namespace pydecode
