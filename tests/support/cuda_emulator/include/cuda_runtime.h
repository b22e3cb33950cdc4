// CUDA emulated on the CPU for tests: the subset of the runtime and device API that pydecode's kernels use.
// Each emulated GPU thread is a coroutine with its own stack; a block's threads run on one host thread and switch
// at barriers (__syncthreads*, warp shuffles and votes), so a kernel runs unchanged, barriers included. Misuse that a
// GPU punishes with a hang or undefined results (a barrier not reached by every thread, a shuffle whose mask is not
// the set of lanes calling it, more shared memory than a launch may have) raises an error instead.
// Launches (<<<...>>>) and __shared__ declarations are rewritten into the calls below by tests/support/cuda_emulation.py.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
using cudaStream_t = struct CUstream_st*;

cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t error);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace cuda_emu {

struct ThreadState;
ThreadState* current_thread();
const dim3& thread_index(const ThreadState* t);
const dim3& block_index();
const dim3& block_dim();
const dim3& grid_dim();

// Barriers: the calling coroutine waits until every thread of its block (or every lane of `mask`) arrives.
int block_barrier(int predicate);
uint64_t warp_exchange(unsigned mask, uint64_t value, int source_lane, bool* source_valid);
unsigned warp_ballot(unsigned mask, int predicate);

// Shared memory of the running block: one allocation per declaration site, filled with garbage bytes.
void* shared_bytes(int site, size_t bytes, size_t align);
void* dynamic_shared_bytes();

// Runs body on every thread of the grid; returns the launch's error (also kept for cudaGetLastError).
using KernelBody = void (*)(void* closure);
cudaError_t launch_raw(KernelBody body, void* closure, dim3 grid, dim3 block, size_t dynamic_shared);

template <typename F>
cudaError_t launch(F&& body, dim3 grid, dim3 block, size_t dynamic_shared = 0, cudaStream_t = nullptr) {
  using Body = std::remove_reference_t<F>;
  return launch_raw([](void* closure) { (*static_cast<Body*>(closure))(); }, &body, grid, block, dynamic_shared);
}

template <typename T>
T& shared_var(int site) {
  static_assert(std::is_trivially_destructible_v<std::remove_all_extents_t<T>>, "shared memory holds plain data");
  return *static_cast<T*>(shared_bytes(site, sizeof(T), alignof(T)));
}

template <typename T>
T* dynamic_shared() { return static_cast<T*>(dynamic_shared_bytes()); }

template <typename T>
T shuffle(unsigned mask, T value, int source_lane) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move values of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bool valid = false;
  bits = warp_exchange(mask, bits, source_lane, &valid);
  if (!valid) return value;  // source lane outside the warp's width: the caller keeps its own value
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}

int lane_id();

}  // namespace cuda_emu

#define threadIdx (::cuda_emu::thread_index(::cuda_emu::current_thread()))
#define blockIdx (::cuda_emu::block_index())
#define blockDim (::cuda_emu::block_dim())
#define gridDim (::cuda_emu::grid_dim())

inline void __syncthreads() { ::cuda_emu::block_barrier(0); }
inline int __syncthreads_or(int predicate) { return ::cuda_emu::block_barrier(predicate != 0); }
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) { ::cuda_emu::warp_ballot(mask, 0); }
inline unsigned __ballot_sync(unsigned mask, int predicate) { return ::cuda_emu::warp_ballot(mask, predicate); }

template <typename T>
T __shfl_sync(unsigned mask, T value, int lane, int width = 32) {
  const int base = ::cuda_emu::lane_id() & ~(width - 1);
  return ::cuda_emu::shuffle(mask, value, base + (lane & (width - 1)));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  const int lane = ::cuda_emu::lane_id(), base = lane & ~(width - 1);
  const int source = lane + static_cast<int>(delta);
  return ::cuda_emu::shuffle(mask, value, source < base + width ? source : -1);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  const int lane = ::cuda_emu::lane_id(), base = lane & ~(width - 1);
  const int source = lane - static_cast<int>(delta);
  return ::cuda_emu::shuffle(mask, value, source >= base ? source : -1);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  const int lane = ::cuda_emu::lane_id(), base = lane & ~(width - 1);
  const int source = lane ^ lane_mask;
  return ::cuda_emu::shuffle(mask, value, source >= base && source < base + width ? source : -1);
}

// A block's threads never run at the same time on the host, so a read-modify-write between barriers is atomic.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <typename T>
T atomicMax(T* address, T value) {
  const T old = *address;
  if (value > old) *address = value;
  return old;
}
template <typename T>
T atomicMin(T* address, T value) {
  const T old = *address;
  if (value < old) *address = value;
  return old;
}

inline float __expf(float x) { return std::exp(x); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
using std::isinf;
using std::isnan;
