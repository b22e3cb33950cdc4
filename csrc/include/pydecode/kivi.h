// KIVI CPU kernels (plain C++ + OpenMP): quantize + pack, and attention on the packed cache.
// Layouts and contracts: pydecode/cache/reference.py. F = 32 / nbits codes per int32 word, code j of a word in
// bits [j * nbits, (j + 1) * nbits). x ~= code * scale + zero.
//   keys   (per channel): codes (B, H, T/F, D) packed along tokens, scale/zero (B, H, T/G, D)
//   values (per token):   codes (B, H, T, D/F) packed along channels, scale/zero (B, H, T, D/G)
// Element types T (activations) and M (scale/zero) only need conversions to and from float, so the same templates
// serve float, at::Half and at::BFloat16 without this header knowing about torch.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "pydecode/cpu_math.h"

namespace pydecode {
namespace kivi {

// Rounded (stored) scale and zero of a group whose float min/max are lo/hi, as float.
template <typename M>
inline void group_meta(float lo, float hi, int nbits, M* scale, M* zero, float& s, float& z) {
  *scale = static_cast<M>((hi - lo) / static_cast<float>((1 << nbits) - 1));
  *zero = static_cast<M>(lo);
  s = static_cast<float>(*scale);
  z = static_cast<float>(*zero);
}

// floor(y + 0.5) clamped to the code range: the rounding every backend shares.
inline uint32_t quantize_code(float x, float s, float z, int nbits) {
  if (!(s > 0.0f)) return 0;
  const float levels = static_cast<float>((1 << nbits) - 1);
  const float c = std::floor((x - z) / s + 0.5f);
  return static_cast<uint32_t>(std::min(std::max(c, 0.0f), levels));
}

// Keys (B, H, T, D) -> per-channel groups of G tokens. valid (B, T) or null: false tokens leave the min/max.
template <typename T, typename M>
void pack_keys(const T* x, const bool* valid, int32_t* codes, M* scale, M* zero, int64_t batch, int64_t heads,
               int64_t tokens, int64_t dim, int nbits, int group) {
  const int64_t per_word = 32 / nbits, groups = tokens / group;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    for (int64_t g = 0; g < groups; ++g) {
      const T* xg = x + (bh * tokens + g * group) * dim;
      const bool* ok = valid ? valid + (bh / heads) * tokens + g * group : nullptr;
      M* sg = scale + (bh * groups + g) * dim;
      M* zg = zero + (bh * groups + g) * dim;
      int32_t* cg = codes + (bh * (tokens / per_word) + g * (group / per_word)) * dim;
      for (int64_t d = 0; d < dim; ++d) {
        float lo = std::numeric_limits<float>::infinity(), hi = -lo;
        for (int64_t t = 0; t < group; ++t) {
          if (ok && !ok[t]) continue;
          const float v = static_cast<float>(xg[t * dim + d]);
          lo = std::min(lo, v);
          hi = std::max(hi, v);
        }
        if (std::isinf(lo)) lo = hi = 0.0f;  // the whole group is padding
        float s, z;
        group_meta(lo, hi, nbits, sg + d, zg + d, s, z);
        for (int64_t w = 0; w < group / per_word; ++w) {
          uint32_t word = 0;
          for (int64_t j = 0; j < per_word; ++j) {
            const float v = static_cast<float>(xg[(w * per_word + j) * dim + d]);
            word |= quantize_code(v, s, z, nbits) << (j * nbits);
          }
          cg[w * dim + d] = static_cast<int32_t>(word);
        }
      }
    }
  }
}

// Values (rows = B * H * T, D) -> per-token groups of G channels.
template <typename T, typename M>
void pack_values(const T* x, int32_t* codes, M* scale, M* zero, int64_t rows, int64_t dim, int nbits, int group) {
  const int64_t per_word = 32 / nbits, groups = dim / group;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    for (int64_t g = 0; g < groups; ++g) {
      float lo = std::numeric_limits<float>::infinity(), hi = -lo;
      for (int64_t c = 0; c < group; ++c) {
        const float v = static_cast<float>(xr[g * group + c]);
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      float s, z;
      group_meta(lo, hi, nbits, scale + r * groups + g, zero + r * groups + g, s, z);
      for (int64_t w = 0; w < group / per_word; ++w) {
        uint32_t word = 0;
        for (int64_t j = 0; j < per_word; ++j) {
          word |= quantize_code(static_cast<float>(xr[g * group + w * per_word + j]), s, z, nbits) << (j * nbits);
        }
        codes[r * (dim / per_word) + g * (group / per_word) + w] = static_cast<int32_t>(word);
      }
    }
  }
}

// Everything the attention reads. Packed stores hold `capacity` tokens, residual buffers `residual_capacity`.
template <typename T, typename M>
struct AttentionArgs {
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

// Softmax partials of one (batch, kv head, split): the group * Q query rows sharing the kv head.
struct Partial {
  std::vector<float> m, l, acc;  // (rows), (rows), (rows, D)
};

// Codes of every byte value as floats: a byte holds 8 / NBITS codes, the first in its low bits. Decoding through
// this table turns a packed word into contiguous floats with four small vector loads, which beats shifting each code
// out.
template <int NBITS>
struct ByteCodes {
  static constexpr int kPerByte = 8 / NBITS;
  float codes[256][kPerByte];
  ByteCodes() {
    for (int b = 0; b < 256; ++b) {
      for (int i = 0; i < kPerByte; ++i) codes[b][i] = static_cast<float>((b >> (i * NBITS)) & ((1 << NBITS) - 1));
    }
  }
};

template <int NBITS>
inline const ByteCodes<NBITS> kByteCodes{};

// The 32 / NBITS codes of `word` dequantized, code * scale + zero, into out[0 .. 32 / NBITS).
template <int NBITS>
inline void decode_word(uint32_t word, float scale, float zero, float* __restrict out) {
  constexpr int per_byte = ByteCodes<NBITS>::kPerByte;
  for (int i = 0; i < 4; ++i) {
    const float* codes = kByteCodes<NBITS>.codes[(word >> (8 * i)) & 0xFFu];
    for (int k = 0; k < per_byte; ++k) out[i * per_byte + k] = codes[k] * scale + zero;
  }
}

// Dequantizes one tile of n <= G tokens starting at t0 into kt (D, G): keys transposed, so that the scores of a
// query row are a sum of contiguous rows (vectorizable over tokens), and v (G, D). Packed tokens when t0 < n_quant,
// else residual ones (a tile never straddles the two: n_quant is a multiple of G).
template <int NBITS, typename T, typename M>
void load_tile(const AttentionArgs<T, M>& a, int64_t bh, int64_t t0, int64_t n, float* kt, float* v) {
  constexpr int64_t F = 32 / NBITS;
  const int64_t D = a.dim, G = a.group;
  if (t0 >= a.n_quant) {
    const int64_t off = (bh * a.residual_capacity + (t0 - a.n_quant)) * D;
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t d = 0; d < D; ++d) {
        kt[d * G + j] = static_cast<float>(a.residual_keys[off + j * D + d]);
        v[j * D + d] = static_cast<float>(a.residual_values[off + j * D + d]);
      }
    }
    return;
  }
  // Keys: word (w, d) holds tokens w * F .. w * F + F - 1 of channel d, one scale/zero per channel for the tile.
  const int64_t meta_off = (bh * (a.capacity / G) + t0 / G) * D;
  const int32_t* kc = a.key_codes + (bh * (a.capacity / F) + t0 / F) * D;
  for (int64_t d = 0; d < D; ++d) {
    const float sc = static_cast<float>(a.key_scale[meta_off + d]), z = static_cast<float>(a.key_zero[meta_off + d]);
    for (int64_t w = 0; w < G / F; ++w) {
      decode_word<NBITS>(static_cast<uint32_t>(kc[w * D + d]), sc, z, kt + d * G + w * F);
    }
  }
  // Values: per token, one scale/zero per G channels; a word never straddles two groups (F divides G).
  for (int64_t j = 0; j < n; ++j) {
    const int64_t tok = bh * a.capacity + t0 + j;
    const int32_t* vw = a.value_codes + tok * (D / F);
    for (int64_t w = 0; w < D / F; ++w) {
      const int64_t g = w * F / G;
      const float sc = static_cast<float>(a.value_scale[tok * (D / G) + g]);
      const float z = static_cast<float>(a.value_zero[tok * (D / G) + g]);
      decode_word<NBITS>(static_cast<uint32_t>(vw[w]), sc, z, v + j * D + w * F);
    }
  }
}

// s[j] = sum over d of q[d] * kt[d * G + j], j < n: blocks of 16 tokens stay in registers across the D channels
// (summed in the same order as a plain loop, so the same floats).
inline void tile_scores(const float* q, const float* kt, int64_t D, int64_t G, int64_t n, float* s) {
  constexpr int64_t kBlock = 16;
  int64_t j0 = 0;
  for (; j0 + kBlock <= n; j0 += kBlock) {
    float block[kBlock] = {};
    for (int64_t d = 0; d < D; ++d) {
      const float qd = q[d];
      const float* k = kt + d * G + j0;
#pragma omp simd
      for (int64_t j = 0; j < kBlock; ++j) block[j] += qd * k[j];
    }
    for (int64_t j = 0; j < kBlock; ++j) s[j0 + j] = block[j];
  }
  for (int64_t j = j0; j < n; ++j) {
    float x = 0.0f;
    for (int64_t d = 0; d < D; ++d) x += q[d] * kt[d * G + j];
    s[j] = x;
  }
}

// acc[d] += sum over j < n of w[j] * v[j * D + d], tokens of weight 0 skipped: blocks of 16 channels stay in
// registers across the tokens (D is a multiple of 16: G divides it).
inline void tile_accumulate(const float* w, const float* v, int64_t D, int64_t n, float* acc) {
  constexpr int64_t kBlock = 16;
  for (int64_t d0 = 0; d0 < D; d0 += kBlock) {
    float block[kBlock];
    for (int64_t d = 0; d < kBlock; ++d) block[d] = acc[d0 + d];
    for (int64_t j = 0; j < n; ++j) {
      const float wj = w[j];
      if (wj == 0.0f) continue;
      const float* vj = v + j * D + d0;
#pragma omp simd
      for (int64_t d = 0; d < kBlock; ++d) block[d] += wj * vj[d];
    }
    for (int64_t d = 0; d < kBlock; ++d) acc[d0 + d] = block[d];
  }
}

// Tokens [begin, end) of one (b, kv head) into p (begin is group-aligned). Tiles of G tokens are dequantized once
// into float and shared by every query row of the kv head.
template <int NBITS, typename T, typename M>
void attend_range(const AttentionArgs<T, M>& a, int64_t b, int64_t h, int64_t begin, int64_t end, Partial& p) {
  const int64_t D = a.dim, G = a.group, n_total = a.n_quant + a.n_residual;
  const int64_t rep = a.q_heads / a.kv_heads, rows = rep * a.q_len;
  const int64_t bh = b * a.kv_heads + h;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const float lowest = exp_lowest_opaque;
  std::vector<float> q(rows * D), kt(D * G), v(G * D), s(G), keep(G);
  const T* qsrc = a.query + (b * a.q_heads + h * rep) * a.q_len * D;
  for (int64_t i = 0; i < rows * D; ++i) q[i] = static_cast<float>(qsrc[i]) * a.scale;
  p.m.assign(rows, neg_inf);
  p.l.assign(rows, 0.0f);
  p.acc.assign(rows * D, 0.0f);
  for (int64_t t0 = begin; t0 < end; t0 += G) {
    const int64_t n = std::min(G, end - t0);
    load_tile<NBITS>(a, bh, t0, n, kt.data(), v.data());
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t qi = r % a.q_len;
      const bool* mrow = a.mask ? a.mask + (b * a.q_len + qi) * n_total + t0 : nullptr;
      tile_scores(q.data() + r * D, kt.data(), D, G, n, s.data());
      float tile_max = neg_inf;
      for (int64_t j = 0; j < n; ++j) {
        const bool ok = mrow ? mrow[j] : (t0 + j <= n_total - a.q_len + qi);
        keep[j] = ok ? 1.0f : 0.0f;
        if (!ok) s[j] = neg_inf;
        tile_max = std::max(tile_max, s[j]);
      }
      const float m_new = std::max(p.m[r], tile_max);
      if (std::isinf(m_new)) continue;  // nothing visible yet for this row
      const float alpha = std::exp(p.m[r] - m_new);
      float* acc = p.acc.data() + r * D;
      for (int64_t d = 0; d < D; ++d) acc[d] *= alpha;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; ++j) {  // the weights, in place of the scores; masked tokens weigh exactly 0
        s[j] = exp_nonpositive(s[j] - m_new, lowest) * keep[j];
        sum += s[j];
      }
      tile_accumulate(s.data(), v.data(), D, n, acc);
      p.l[r] = p.l[r] * alpha + sum;
      p.m[r] = m_new;
    }
  }
}

// Flash-decoding on CPU: (batch x kv head x split) tasks in parallel, splits merged per row at the end.
template <typename T, typename M>
void attention(const AttentionArgs<T, M>& a, int64_t splits) {
  const int64_t n_total = a.n_quant + a.n_residual, G = a.group, D = a.dim;
  const int64_t per_split = std::max<int64_t>(G, (n_total + splits - 1) / splits + G - 1) / G * G;
  splits = std::max<int64_t>(1, (n_total + per_split - 1) / per_split);
  const int64_t tasks = a.batch * a.kv_heads, rep = a.q_heads / a.kv_heads, rows = rep * a.q_len;
  std::vector<Partial> parts(tasks * splits);
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < tasks * splits; ++i) {
    const int64_t task = i / splits, split = i % splits;
    const int64_t begin = split * per_split, end = std::min(n_total, begin + per_split);
    if (a.nbits == 2) {
      attend_range<2>(a, task / a.kv_heads, task % a.kv_heads, begin, end, parts[i]);
    } else {
      attend_range<4>(a, task / a.kv_heads, task % a.kv_heads, begin, end, parts[i]);
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / a.kv_heads, h = task % a.kv_heads;
    T* out = a.out + (b * a.q_heads + h * rep) * a.q_len * D;
    for (int64_t r = 0; r < rows; ++r) {
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t sp = 0; sp < splits; ++sp) m = std::max(m, parts[task * splits + sp].m[r]);
      float l = 0.0f;
      std::vector<float> acc(D, 0.0f);
      for (int64_t sp = 0; sp < splits; ++sp) {
        const Partial& p = parts[task * splits + sp];
        if (std::isinf(p.m[r])) continue;
        const float w = std::exp(p.m[r] - m);
        l += w * p.l[r];
        for (int64_t d = 0; d < D; ++d) acc[d] += w * p.acc[r * D + d];
      }
      for (int64_t d = 0; d < D; ++d) out[r * D + d] = static_cast<T>(l > 0.0f ? acc[d] / l : 0.0f);
    }
  }
}

}  // namespace kivi
}  // namespace pydecode
