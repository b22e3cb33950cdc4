// KIVI CPU kernels (C++ + OpenMP): quantize + pack, and attention on the packed cache, whose packed tiles run the
// AVX2 loops of kernel_avx2.h where the CPU has them (chosen at run time) and portable ones elsewhere.
// Layouts and contracts: pydecode/ops/kivi/reference.py. F = 32 / nbits codes per int32 word, code j of a word in
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
#include "kernel_avx2.h"

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

// The 32 / NBITS codes of `word` as floats into out[0 .. 32 / NBITS).
template <int NBITS>
PYDECODE_ALWAYS_INLINE void decode_word(uint32_t word, float* __restrict out) {
  constexpr int per_byte = ByteCodes<NBITS>::kPerByte;
  for (int i = 0; i < 4; ++i) {
    const float* codes = kByteCodes<NBITS>.codes[(word >> (8 * i)) & 0xFFu];
    for (int k = 0; k < per_byte; ++k) out[i * per_byte + k] = codes[k];
  }
}

// One tile of G tokens in code space, x = code * scale + zero: key (token j, channel d) from kc[d * G + j] (keys
// transposed, so a query row's scores are sums of contiguous rows) with ks[d], kz[d]; value (j, d) from vc[j * D + d]
// with vs/vz[(d / G) * G + j]. A residual tile holds the exact values with scale 1 and zero 0. The attention
// folds the scales into the query and the weights, so the inner loops multiply codes directly. The AVX2 loops read
// a packed tile's codes from the cache (key_words, value_words) instead of kc and vc; both are null for a residual
// tile.
struct Tile {
  std::vector<float> kc, ks, kz, vc, vs, vz;
  const int32_t* key_words = nullptr;
  const int32_t* value_words = nullptr;
  Tile(int64_t D, int64_t G) : kc(D * G, 0.0f), ks(D), kz(D), vc(G * D, 0.0f), vs(D), vz(D) {}
};

// Fills `tile` with the n <= G tokens from t0: packed ones when t0 < n_quant, else residual ones (a tile never
// straddles the two: n_quant is a multiple of G). Packed codes are decoded into kc and vc only when `decode`.
template <int NBITS, typename T, typename M>
PYDECODE_ALWAYS_INLINE void load_tile(const AttentionArgs<T, M>& a, int64_t bh, int64_t t0, int64_t n, bool decode,
                                      Tile& tile) {
  constexpr int64_t F = 32 / NBITS;
  const int64_t D = a.dim, G = a.group, per_token = D / G;
  if (t0 >= a.n_quant) {
    tile.key_words = tile.value_words = nullptr;
    const int64_t off = (bh * a.residual_capacity + (t0 - a.n_quant)) * D;
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t d = 0; d < D; ++d) {
        tile.kc[d * G + j] = static_cast<float>(a.residual_keys[off + j * D + d]);
        tile.vc[j * D + d] = static_cast<float>(a.residual_values[off + j * D + d]);
      }
    }
    std::fill(tile.ks.begin(), tile.ks.end(), 1.0f);
    std::fill(tile.kz.begin(), tile.kz.end(), 0.0f);
    std::fill(tile.vs.begin(), tile.vs.end(), 1.0f);
    std::fill(tile.vz.begin(), tile.vz.end(), 0.0f);
    return;
  }
  // Keys: word (w, d) holds tokens w * F .. w * F + F - 1 of channel d, one scale/zero per channel for the tile.
  const int64_t meta_off = (bh * (a.capacity / G) + t0 / G) * D;
  const int32_t* kc = a.key_codes + (bh * (a.capacity / F) + t0 / F) * D;
  tile.key_words = kc;
  tile.value_words = a.value_codes + (bh * a.capacity + t0) * (D / F);
  for (int64_t d = 0; d < D; ++d) {
    tile.ks[d] = static_cast<float>(a.key_scale[meta_off + d]);
    tile.kz[d] = static_cast<float>(a.key_zero[meta_off + d]);
    if (!decode) continue;
    for (int64_t w = 0; w < G / F; ++w) decode_word<NBITS>(static_cast<uint32_t>(kc[w * D + d]), &tile.kc[d * G + w * F]);
  }
  // Values: per token, one scale/zero per G channels; a word never straddles two groups (F divides G).
  for (int64_t j = 0; j < n; ++j) {
    const int64_t tok = bh * a.capacity + t0 + j;
    const int32_t* vw = a.value_codes + tok * (D / F);
    for (int64_t w = 0; decode && w < D / F; ++w) decode_word<NBITS>(static_cast<uint32_t>(vw[w]), &tile.vc[j * D + w * F]);
    for (int64_t g = 0; g < per_token; ++g) {
      tile.vs[g * G + j] = static_cast<float>(a.value_scale[tok * per_token + g]);
      tile.vz[g * G + j] = static_cast<float>(a.value_zero[tok * per_token + g]);
    }
  }
}

// Query rows are processed RB at a time (RB <= kRowBlock) so that each code loaded feeds RB multiply-adds.
constexpr int64_t kRowBlock = 4;
constexpr int64_t kLanes = 8;  // tokens (scores) or channels (values) a row holds in registers; divides G

// s[r * G + j] = bias[r] + sum over d of qs[r * D + d] * kc[d * G + j], for all G tokens of the tile.
template <int RB>
PYDECODE_ALWAYS_INLINE void block_scores(const float* qs, const float* bias, const float* kc, int64_t D, int64_t G,
                                         float* s) {
  for (int64_t j0 = 0; j0 < G; j0 += kLanes) {
    float block[RB][kLanes];
    for (int r = 0; r < RB; ++r) {
      for (int64_t j = 0; j < kLanes; ++j) block[r][j] = bias[r];
    }
    for (int64_t d = 0; d < D; ++d) {
      const float* k = kc + d * G + j0;
      for (int r = 0; r < RB; ++r) {
        const float qd = qs[r * D + d];
#pragma omp simd
        for (int64_t j = 0; j < kLanes; ++j) block[r][j] += qd * k[j];
      }
    }
    for (int r = 0; r < RB; ++r) {
      for (int64_t j = 0; j < kLanes; ++j) s[r * G + j0 + j] = block[r][j];
    }
  }
}

// acc[r * D + d] += bz[r * P + d / G] + sum over live tokens j < n of ws[(r * P + d / G) * G + j] * vc[j * D + d],
// P = D / G groups per token: the value scales folded into the weights, the zero points summed apart.
template <int RB>
PYDECODE_ALWAYS_INLINE void block_values(const float* ws, const float* bz, const float* vc, const char* live,
                                         int64_t D, int64_t G, int64_t n, float* acc) {
  const int64_t P = D / G;
  for (int64_t d0 = 0; d0 < D; d0 += kLanes) {
    const int64_t g = d0 / G;
    float block[RB][kLanes];
    for (int r = 0; r < RB; ++r) {
      for (int64_t d = 0; d < kLanes; ++d) block[r][d] = acc[r * D + d0 + d] + bz[r * P + g];
    }
    for (int64_t j = 0; j < n; ++j) {
      if (!live[j]) continue;
      const float* v = vc + j * D + d0;
      for (int r = 0; r < RB; ++r) {
        const float w = ws[(r * P + g) * G + j];
#pragma omp simd
        for (int64_t d = 0; d < kLanes; ++d) block[r][d] += w * v[d];
      }
    }
    for (int r = 0; r < RB; ++r) {
      for (int64_t d = 0; d < kLanes; ++d) acc[r * D + d0 + d] = block[r][d];
    }
  }
}

// Scratch of one attend_range call, sized for kRowBlock rows and one tile.
struct RowScratch {
  std::vector<float> qs, bias, s, keep, ws, bz;
  std::vector<char> live;
  RowScratch(int64_t D, int64_t G)
      : qs(kRowBlock * D), bias(kRowBlock), s(kRowBlock * G), keep(G), ws(kRowBlock * D), bz(kRowBlock * (D / G)),
        live(G) {}
};

// A tile's scores (block_scores' contract): with kAvx2, a packed tile's are taken from its codes in the cache.
template <bool kAvx2, int NBITS, int RB>
PYDECODE_ALWAYS_INLINE void tile_scores(const Tile& tile, const float* qs, const float* bias, int64_t D, int64_t G,
                                        float* s) {
#if PYDECODE_HAS_AVX2_KERNELS
  if constexpr (kAvx2) {
    if (tile.key_words) return avx2::key_scores<NBITS, RB>(tile.key_words, qs, bias, D, G, s);
  }
#endif
  block_scores<RB>(qs, bias, tile.kc.data(), D, G, s);
}

// A tile's value sums (block_values' contract), from the codes in the cache likewise.
template <bool kAvx2, int NBITS, int RB>
PYDECODE_ALWAYS_INLINE void tile_values(const Tile& tile, const float* ws, const float* bz, const char* live,
                                        int64_t D, int64_t G, int64_t n, float* acc) {
#if PYDECODE_HAS_AVX2_KERNELS
  if constexpr (kAvx2) {
    if (tile.value_words) return avx2::value_sums<NBITS, RB>(tile.value_words, ws, bz, live, D, G, n, acc);
  }
#endif
  block_values<RB>(ws, bz, tile.vc.data(), live, D, G, n, acc);
}

// The rows [r0, r0 + RB) of p against one loaded tile of n tokens from t0.
template <bool kAvx2, int NBITS, int RB, typename T, typename M>
PYDECODE_ALWAYS_INLINE void attend_tile(const AttentionArgs<T, M>& a, int64_t b, int64_t t0, int64_t n,
                                        const Tile& tile, const float* q, int64_t r0, RowScratch& w, Partial& p) {
  const int64_t D = a.dim, G = a.group, P = D / G, n_total = a.n_quant + a.n_residual;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const float lowest = exp_lowest_opaque;
  for (int r = 0; r < RB; ++r) {
    const float* qr = q + (r0 + r) * D;
    float* qs = w.qs.data() + r * D;
    float bias = 0.0f;
#pragma omp simd reduction(+ : bias)
    for (int64_t d = 0; d < D; ++d) {
      qs[d] = qr[d] * tile.ks[d];
      bias += qr[d] * tile.kz[d];
    }
    w.bias[r] = bias;
  }
  tile_scores<kAvx2, NBITS, RB>(tile, w.qs.data(), w.bias.data(), D, G, w.s.data());
  std::fill(w.live.begin(), w.live.end(), 0);
  for (int r = 0; r < RB; ++r) {
    const int64_t row = r0 + r, qi = row % a.q_len;
    const bool* mrow = a.mask ? a.mask + (b * a.q_len + qi) * n_total + t0 : nullptr;
    const int64_t visible = mrow ? n : std::min(n, n_total - a.q_len + qi - t0 + 1);  // causal: tokens j < visible
    float* s = w.s.data() + r * G;
    float* ws = w.ws.data() + r * P * G;
    float* bz = w.bz.data() + r * P;
    float tile_max = neg_inf;
#pragma omp simd reduction(max : tile_max)
    for (int64_t j = 0; j < n; ++j) {
      const bool ok = mrow ? mrow[j] : j < visible;
      w.keep[j] = ok ? 1.0f : 0.0f;
      s[j] = ok ? s[j] : neg_inf;
      tile_max = std::max(tile_max, s[j]);
    }
    const float m_new = std::max(p.m[row], tile_max);
    if (std::isinf(m_new)) {  // nothing visible yet for this row: it adds nothing
      std::fill(ws, ws + P * G, 0.0f);
      std::fill(bz, bz + P, 0.0f);
      continue;
    }
    if (m_new > p.m[row]) {  // a new maximum: rescale what the row has summed so far
      const float alpha = std::exp(p.m[row] - m_new);
      float* acc = p.acc.data() + row * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) acc[d] *= alpha;
      p.l[row] *= alpha;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; ++j) {  // the weights, in place of the scores; masked tokens weigh exactly 0
      s[j] = exp_nonpositive(s[j] - m_new, lowest) * w.keep[j];
      sum += s[j];
    }
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) w.live[j] |= s[j] != 0.0f;
    for (int64_t g = 0; g < P; ++g) {  // value scales folded into the weights, zero points summed per group
      const float* vs = tile.vs.data() + g * G;
      const float* vz = tile.vz.data() + g * G;
      float z = 0.0f;
#pragma omp simd reduction(+ : z)
      for (int64_t j = 0; j < n; ++j) {
        ws[g * G + j] = s[j] * vs[j];
        z += s[j] * vz[j];
      }
      bz[g] = z;
    }
    p.l[row] += sum;
    p.m[row] = m_new;
  }
  tile_values<kAvx2, NBITS, RB>(tile, w.ws.data(), w.bz.data(), w.live.data(), D, G, n, p.acc.data() + r0 * D);
}

// Tokens [begin, end) of one (b, kv head) into p (begin is group-aligned). Each tile of G tokens is loaded once and
// shared by every query row of the kv head.
template <bool kAvx2, int NBITS, typename T, typename M>
PYDECODE_ALWAYS_INLINE void attend_range_body(const AttentionArgs<T, M>& a, int64_t b, int64_t h, int64_t begin,
                                              int64_t end, Partial& p) {
  const int64_t D = a.dim, G = a.group;
  const int64_t rep = a.q_heads / a.kv_heads, rows = rep * a.q_len;
  const int64_t bh = b * a.kv_heads + h;
  std::vector<float> q(rows * D);
  const T* qsrc = a.query + (b * a.q_heads + h * rep) * a.q_len * D;
  for (int64_t i = 0; i < rows * D; ++i) q[i] = static_cast<float>(qsrc[i]) * a.scale;
  p.m.assign(rows, -std::numeric_limits<float>::infinity());
  p.l.assign(rows, 0.0f);
  p.acc.assign(rows * D, 0.0f);
  Tile tile(D, G);
  RowScratch scratch(D, G);
  for (int64_t t0 = begin; t0 < end; t0 += G) {
    const int64_t n = std::min(G, end - t0);
    load_tile<NBITS>(a, bh, t0, n, !kAvx2, tile);
    int64_t r0 = 0;
    for (; r0 + kRowBlock <= rows; r0 += kRowBlock) {
      attend_tile<kAvx2, NBITS, kRowBlock>(a, b, t0, n, tile, q.data(), r0, scratch, p);
    }
    switch (rows - r0) {
      case 3: attend_tile<kAvx2, NBITS, 3>(a, b, t0, n, tile, q.data(), r0, scratch, p); break;
      case 2: attend_tile<kAvx2, NBITS, 2>(a, b, t0, n, tile, q.data(), r0, scratch, p); break;
      case 1: attend_tile<kAvx2, NBITS, 1>(a, b, t0, n, tile, q.data(), r0, scratch, p); break;
      default: break;
    }
  }
}

template <int NBITS, typename T, typename M>
void attend_range(const AttentionArgs<T, M>& a, int64_t b, int64_t h, int64_t begin, int64_t end, Partial& p) {
  attend_range_body<false, NBITS>(a, b, h, begin, end, p);
}

#if PYDECODE_HAS_AVX2_KERNELS
// The same, compiled for AVX2 + FMA (the whole body is inlined here) with the packed tiles read by kernel_avx2.h.
template <int NBITS, typename T, typename M>
PYDECODE_TARGET_AVX2 void attend_range_avx2(const AttentionArgs<T, M>& a, int64_t b, int64_t h, int64_t begin,
                                            int64_t end, Partial& p) {
  attend_range_body<true, NBITS>(a, b, h, begin, end, p);
}
#endif

// attend_range with the fastest loops this CPU runs.
template <int NBITS, typename T, typename M>
void attend_range_dispatch(const AttentionArgs<T, M>& a, bool avx2, int64_t b, int64_t h, int64_t begin, int64_t end,
                           Partial& p) {
#if PYDECODE_HAS_AVX2_KERNELS
  if (avx2) return attend_range_avx2<NBITS>(a, b, h, begin, end, p);
#endif
  attend_range<NBITS>(a, b, h, begin, end, p);
}

// Flash-decoding on CPU: (batch x kv head x split) tasks in parallel, splits merged per row at the end.
template <typename T, typename M>
void attention(const AttentionArgs<T, M>& a, int64_t splits) {
  const int64_t n_total = a.n_quant + a.n_residual, G = a.group, D = a.dim;
  const int64_t per_split = std::max<int64_t>(G, (n_total + splits - 1) / splits + G - 1) / G * G;
  splits = std::max<int64_t>(1, (n_total + per_split - 1) / per_split);
  const int64_t tasks = a.batch * a.kv_heads, rep = a.q_heads / a.kv_heads, rows = rep * a.q_len;
  std::vector<Partial> parts(tasks * splits);
  const bool avx2 = use_avx2();
#pragma omp parallel for schedule(dynamic)
  for (int64_t i = 0; i < tasks * splits; ++i) {
    const int64_t task = i / splits, split = i % splits;
    const int64_t begin = split * per_split, end = std::min(n_total, begin + per_split);
    if (a.nbits == 2) {
      attend_range_dispatch<2>(a, avx2, task / a.kv_heads, task % a.kv_heads, begin, end, parts[i]);
    } else {
      attend_range_dispatch<4>(a, avx2, task / a.kv_heads, task % a.kv_heads, begin, end, parts[i]);
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
