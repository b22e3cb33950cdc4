// Block-wide radix select and gather on order-preserving integer keys (CUDA), shared by the sampler and beam top-k.
//
// A select finds, digit by digit from the most significant (11 bits each, the last one what remains), the bin where
// the weight counted from the largest keys first reaches a goal: one pass over the entries per digit, a histogram in
// shared memory. Once the bin and the bins above it hold few enough entries, one more pass gathers them into shared
// memory and sorts them there, so that nothing ever sorts a whole row.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "pydecode/common.h"

namespace pydecode {
namespace radix {

constexpr int kBins = 2048;       // an 11-bit digit
constexpr int kGatherMax = 1024;  // most keys gathered into shared memory (a power of two)

template <typename Key>
__host__ __device__ constexpr int levels() { return (8 * static_cast<int>(sizeof(Key)) + 10) / 11; }
template <typename Key>
__device__ __forceinline__ int digit_shift(int level) {
  const int shift = 8 * static_cast<int>(sizeof(Key)) - 11 * (level + 1);
  return shift > 0 ? shift : 0;
}
template <typename Key>
__device__ __forceinline__ int digit_width(int level) {
  return level == levels<Key>() - 1 ? 8 * static_cast<int>(sizeof(Key)) - 11 * level : 11;
}

// A float and its index as one 64-bit key: larger value first, then the smaller index. 0 is below every such key
// (the key of -inf is 0x007FFFFF << 32), so it pads.
__device__ __forceinline__ unsigned long long value_index_key(float value, uint32_t index) {
  return (static_cast<unsigned long long>(order_key(value)) << 32) | (0xFFFFFFFFu - index);
}
__device__ __forceinline__ float key_value(unsigned long long key) {
  return float_from_key(static_cast<uint32_t>(key >> 32));
}
__device__ __forceinline__ uint32_t key_index(unsigned long long key) {
  return 0xFFFFFFFFu - static_cast<uint32_t>(key & 0xFFFFFFFFu);
}

struct State {
  unsigned long long hist[kBins];
  unsigned long long above, target;
  uint32_t bin;
  bool found;
};

template <typename Key>
struct Entry {
  Key key;
  unsigned long long weight;  // 0 leaves the entry out
};

// Warp 0 finds the bin of s.hist where the weight counted from the top (after s.above, the weight of the higher bins
// of earlier levels) first reaches the goal: s.bin, s.above (the weight above that bin now) and s.found. At level 0
// it sets the goal s.target (a fraction of the total when relative). The whole block calls it; it ends synced.
__device__ inline void find_bin(State& s, int level, double target, bool relative) {
  if (threadIdx.x < 32) {  // lane l owns bins [kBins - 64 (l + 1), kBins - 64 l), scanned from the top
    const int lane = threadIdx.x, top = kBins - 64 * lane - 1;
    unsigned long long chunk = 0;
    for (int b = 0; b < 64; ++b) chunk += s.hist[top - b];
    unsigned long long before = chunk;  // inclusive scan of chunk over lanes 0..lane
    for (int offset = 1; offset < 32; offset <<= 1) {
      const unsigned long long up = __shfl_up_sync(0xFFFFFFFFu, before, offset);
      if (lane >= offset) before += up;
    }
    before -= chunk;
    if (level == 0 && lane == 31) {
      const unsigned long long total = before + chunk;
      s.target = relative ? static_cast<unsigned long long>(ceil(target * static_cast<double>(total)))
                          : static_cast<unsigned long long>(target);
    }
    __syncwarp();
    const unsigned long long goal = s.target, above = s.above;
    const bool mine = above + before < goal && above + before + chunk >= goal;
    const unsigned ballot = __ballot_sync(0xFFFFFFFFu, mine);
    if (lane == 0) s.found = ballot != 0;
    if (mine) {
      unsigned long long acc = above + before;
      int b = 0;
      while (acc + s.hist[top - b] < goal) acc += s.hist[top - b++];
      s.bin = static_cast<uint32_t>(top - b);
      s.above = acc;
    }
  }
  __syncthreads();
}

// Clears the histogram (and, for level 0, s.above) before a count. Ends synced.
__device__ inline void clear(State& s, int level) {
  for (int b = threadIdx.x; b < kBins; b += blockDim.x) s.hist[b] = 0;
  if (level == 0 && threadIdx.x == 0) s.above = 0;
  __syncthreads();
}

// Adds an entry of level `level` to the histogram when its digits above that level equal `prefix`.
template <typename Key>
__device__ __forceinline__ void count(State& s, Entry<Key> e, int level, Key prefix) {
  const int shift = digit_shift<Key>(level);
  if (level > 0 && (e.key >> (shift + digit_width<Key>(level))) != prefix) return;
  if (e.weight != 0) {
    const Key mask = (Key{1} << digit_width<Key>(level)) - 1;
    atomicAdd(&s.hist[static_cast<int>((e.key >> shift) & mask)], e.weight);
  }
}

// s.hist <- the weights of the entries i in [0, n) (entry(i) -> Entry<Key>) whose digits above `level` equal
// prefix, binned by their digit `level`. Ends synced.
template <typename Key, typename EntryOf>
__device__ void count_level(int64_t n, EntryOf entry, int level, Key prefix, State& s) {
  clear(s, level);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) count<Key>(s, entry(i), level, prefix);
  __syncthreads();
}

// Sorts keys[0, n) descending with the whole block (bitonic; [n, next power of two) must fit: it is padded with 0).
__device__ inline void sort_desc(unsigned long long* keys, int n) {
  int size = 1;
  while (size < n) size <<= 1;
  for (int i = n + threadIdx.x; i < size; i += blockDim.x) keys[i] = 0;
  __syncthreads();
  for (int width = 2; width <= size; width <<= 1) {
    for (int stride = width >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < size; i += blockDim.x) {
        const int j = i ^ stride;
        if (j > i) {
          const unsigned long long a = keys[i], b = keys[j];
          if (((i & width) == 0) ? a < b : a > b) {
            keys[i] = b;
            keys[j] = a;
          }
        }
      }
      __syncthreads();
    }
  }
}

// keys <- the keys key_of(i), i in [0, n), that pass keep(key), sorted descending; count (shared) <- how many
// passed. False, with keys unusable, when more than kGatherMax pass.
template <typename KeyOf, typename Keep>
__device__ bool gather(int64_t n, KeyOf key_of, Keep keep, unsigned long long* keys, int& count) {
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const unsigned long long key = key_of(i);
    if (!keep(key)) continue;
    const int slot = atomicAdd(&count, 1);
    if (slot < kGatherMax) keys[slot] = key;
  }
  __syncthreads();
  const int gathered = count;
  if (gathered > kGatherMax) return false;
  sort_desc(keys, gathered);
  return true;
}

}  // namespace radix
}  // namespace pydecode
