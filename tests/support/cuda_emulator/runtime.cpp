// The emulated CUDA runtime of include/cuda_runtime.h: blocks run one after another; inside a block every thread is
// a coroutine (own stack, x86-64 context switch below) and a scheduler resumes them in turn until each reaches a
// barrier or returns. CUDA_EMU_ORDER=reverse or shuffle changes the order in which they are resumed, so that code
// missing a barrier between a shared-memory write and another thread's read gives a different result.
// Built with -fsanitize=address (tests/support/cuda_emulation.py, PYDECODE_CUDA_EMULATION=asan), every global-memory access
// of a kernel is bounds-checked against the tensors torch allocated; the switches tell the sanitizer about the stacks.
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "cuda_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

extern "C" void cuda_emu_switch(void** save_sp, void* next_sp);
// Saves the callee-saved registers and the FP control words on the current stack, stores its pointer in *save_sp,
// and continues on next_sp, which holds the same frame saved by an earlier switch (or made by Fiber::start).
asm(R"(
.text
.globl cuda_emu_switch
.type cuda_emu_switch,@function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cuda_emu_switch,.-cuda_emu_switch
)");

namespace cuda_emu {
namespace {

constexpr size_t kStackBytes = size_t{256} << 10;
constexpr size_t kGuardBytes = size_t{4} << 10;
constexpr size_t kMaxSharedBytes = size_t{48} << 10;  // a launch's limit without cudaFuncSetAttribute
constexpr int kWarpSize = 32;

enum class Wait { kNone, kBlock, kWarp, kDone };

}  // namespace

struct ThreadState {
  dim3 index;
  int linear = 0;
  void* sp = nullptr;
  char* stack = nullptr;
  Wait wait = Wait::kNone;
  unsigned warp_ops = 0;  // warp barriers passed: selects the exchange buffer
};

namespace {

struct WarpState {
  unsigned mask = 0, arrived[2] = {0, 0};
  uint64_t slot[2][kWarpSize] = {};
};

struct BlockState {
  dim3 index, dim, grid;
  std::vector<ThreadState> threads;
  std::vector<WarpState> warps;
  int live = 0, at_barrier = 0, barrier_or = 0, barrier_result = 0;
  std::unordered_map<int, std::pair<std::vector<unsigned char>, size_t>> shared;  // site -> bytes, size
  size_t static_shared = 0;
  std::vector<unsigned char> dynamic;
  KernelBody body = nullptr;
  void* closure = nullptr;
  void* scheduler_sp = nullptr;
  std::string error;
};

thread_local BlockState* running_block = nullptr;
thread_local ThreadState* running_thread = nullptr;
thread_local std::vector<char*> stack_pool;
thread_local cudaError_t last_error = cudaSuccess;
#if defined(__SANITIZE_ADDRESS__)
thread_local const void* host_stack_bottom = nullptr;  // the scheduler's stack, learnt by each new coroutine
thread_local size_t host_stack_size = 0;
#endif

char* take_stack() {
  if (!stack_pool.empty()) {
    char* s = stack_pool.back();
    stack_pool.pop_back();
    return s;
  }
  void* p = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("cuda_emu: cannot map a thread stack");
  mprotect(p, kGuardBytes, PROT_NONE);  // an overflow faults instead of corrupting a neighbour
  return static_cast<char*>(p);
}

// Switches from the running stack to `to` (whose usable memory is [bottom, bottom + size), or the host thread's own
// stack when bottom is null), keeping AddressSanitizer's view of the stacks right when it is on.
void switch_stack(void** save_sp, void* to, const void* bottom, size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  void* fake_stack = nullptr;
  __sanitizer_start_switch_fiber(&fake_stack, bottom ? bottom : host_stack_bottom, bottom ? size : host_stack_size);
  cuda_emu_switch(save_sp, to);
  const void* from_bottom;
  size_t from_size;
  __sanitizer_finish_switch_fiber(fake_stack, &from_bottom, &from_size);
#else
  (void)bottom;
  (void)size;
  cuda_emu_switch(save_sp, to);
#endif
}

void yield_to_scheduler() { switch_stack(&running_thread->sp, running_block->scheduler_sp, nullptr, 0); }

void fail(const std::string& message) {
  BlockState& b = *running_block;
  if (b.error.empty()) b.error = message;
  running_thread->wait = Wait::kDone;
  yield_to_scheduler();  // never resumed
}

std::string where(const ThreadState& t) {
  const BlockState& b = *running_block;
  return "thread (" + std::to_string(t.index.x) + "," + std::to_string(t.index.y) + "," + std::to_string(t.index.z) +
         ") of block (" + std::to_string(b.index.x) + "," + std::to_string(b.index.y) + "," +
         std::to_string(b.index.z) + ")";
}

[[noreturn]] void thread_main() {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(nullptr, &host_stack_bottom, &host_stack_size);
#endif
  ThreadState* self = running_thread;
  running_block->body(running_block->closure);
  running_block->live -= 1;
  if (running_block->at_barrier > 0 && running_block->error.empty()) {
    running_block->error = "cuda_emu: " + where(*self) + " returned while other threads wait at __syncthreads";
  }
  self->wait = Wait::kDone;
  yield_to_scheduler();
  std::abort();  // a finished thread is never resumed
}

// Lays out a frame that cuda_emu_switch "returns" into thread_main with a call-aligned stack.
void start(ThreadState& t) {
#if defined(__SANITIZE_ADDRESS__)
  ASAN_UNPOISON_MEMORY_REGION(t.stack + kGuardBytes, kStackBytes);  // frames a previous coroutine left
#endif
  auto* top = reinterpret_cast<uint64_t*>(t.stack + kGuardBytes + kStackBytes);
  top = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(top) & ~uintptr_t{15});
  *--top = 0;                                           // thread_main's caller slot: rsp % 16 == 8 at its entry
  *--top = reinterpret_cast<uint64_t>(&thread_main);  // return address
  for (int i = 0; i < 6; ++i) *--top = 0;               // rbp rbx r12 r13 r14 r15
  uint32_t control[2];
  asm volatile("stmxcsr %0" : "=m"(control[0]));
  asm volatile("fnstcw %0" : "=m"(control[1]));
  *--top = (uint64_t{control[1]} << 32) | control[0];
  t.sp = top;
}

std::vector<int> resume_order(int n) {
  std::vector<int> order(n);
  for (int i = 0; i < n; ++i) order[i] = i;
  static const char* mode = std::getenv("CUDA_EMU_ORDER");
  if (mode && std::string(mode) == "reverse") std::reverse(order.begin(), order.end());
  if (mode && std::string(mode) == "shuffle") {
    thread_local std::mt19937 rng(12345);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

std::string deadlock_report(const BlockState& b) {
  int at_block = 0, at_warp = 0;
  for (const ThreadState& t : b.threads) {
    at_block += t.wait == Wait::kBlock;
    at_warp += t.wait == Wait::kWarp;
  }
  return "cuda_emu: deadlock in block (" + std::to_string(b.index.x) + "," + std::to_string(b.index.y) + "," +
         std::to_string(b.index.z) + "): " + std::to_string(at_block) + " threads wait at __syncthreads, " +
         std::to_string(at_warp) + " at a warp shuffle/vote whose other lanes never arrive, " +
         std::to_string(b.live) + " not finished";
}

void run_block(BlockState& b) {
  const int n = static_cast<int>(b.threads.size());
  b.live = n;
  b.at_barrier = 0;
  b.shared.clear();
  b.static_shared = 0;
  std::fill(b.dynamic.begin(), b.dynamic.end(), 0xFF);
  for (WarpState& w : b.warps) w = WarpState{};
  for (ThreadState& t : b.threads) {
    t.wait = Wait::kNone;
    t.warp_ops = 0;
    start(t);
  }
  running_block = &b;
  while (b.live > 0 && b.error.empty()) {
    bool progressed = false;
    for (int i : resume_order(n)) {
      ThreadState& t = b.threads[i];
      if (t.wait != Wait::kNone) continue;
      running_thread = &t;
      switch_stack(&b.scheduler_sp, t.sp, t.stack + kGuardBytes, kStackBytes);
      progressed = true;
      if (!b.error.empty()) break;
    }
    if (!progressed && b.error.empty()) b.error = deadlock_report(b);
  }
  running_block = nullptr;
  running_thread = nullptr;
  if (!b.error.empty()) throw std::runtime_error(b.error);
}

}  // namespace

ThreadState* current_thread() { return running_thread; }
const dim3& thread_index(const ThreadState* t) {
  if (!t) throw std::runtime_error("cuda_emu: threadIdx read outside a kernel");
  return t->index;
}
const dim3& block_index() { return running_block->index; }
const dim3& block_dim() { return running_block->dim; }
const dim3& grid_dim() { return running_block->grid; }
int lane_id() { return running_thread->linear % kWarpSize; }

int block_barrier(int predicate) {
  BlockState& b = *running_block;
  if (b.live < static_cast<int>(b.threads.size())) {
    fail("cuda_emu: " + where(*running_thread) + " reached __syncthreads after other threads of its block returned");
  }
  b.barrier_or |= predicate;
  running_thread->wait = Wait::kBlock;
  if (++b.at_barrier == b.live) {
    b.barrier_result = b.barrier_or;
    b.barrier_or = 0;
    b.at_barrier = 0;
    for (ThreadState& t : b.threads) {
      if (t.wait == Wait::kBlock) t.wait = Wait::kNone;
    }
  }
  yield_to_scheduler();
  return b.barrier_result;
}

// One warp barrier: the lane posts value, waits for every lane of mask, and reads the value source_lane posted.
uint64_t warp_exchange(unsigned mask, uint64_t value, int source_lane, bool* source_valid) {
  BlockState& b = *running_block;
  ThreadState& self = *running_thread;
  const int lane = self.linear % kWarpSize, warp = self.linear / kWarpSize;
  const int lanes_here = std::min(kWarpSize, static_cast<int>(b.threads.size()) - warp * kWarpSize);
  const unsigned existing = lanes_here == kWarpSize ? 0xFFFFFFFFu : ((1u << lanes_here) - 1u);
  WarpState& w = b.warps[warp];
  const int buffer = self.warp_ops & 1;
  if (!(mask & (1u << lane))) fail("cuda_emu: " + where(self) + " calls a warp op with a mask that excludes it");
  if (mask & ~existing) fail("cuda_emu: " + where(self) + " names lanes that do not exist in its warp's mask");
  if (w.arrived[buffer] == 0) {
    w.mask = mask;
  } else if (w.mask != mask) {
    fail("cuda_emu: " + where(self) + " calls a warp op with a mask different from its warp-mates'");
  }
  w.slot[buffer][lane] = value;
  w.arrived[buffer] |= 1u << lane;
  self.wait = Wait::kWarp;
  self.warp_ops += 1;
  if (w.arrived[buffer] == mask) {
    w.arrived[buffer] = 0;
    for (int l = 0; l < lanes_here; ++l) {
      ThreadState& t = b.threads[warp * kWarpSize + l];
      if ((mask & (1u << l)) && t.wait == Wait::kWarp) t.wait = Wait::kNone;
    }
  }
  yield_to_scheduler();
  *source_valid = source_lane >= 0;
  if (source_lane < 0) return value;
  if (!(mask & (1u << source_lane))) {
    fail("cuda_emu: " + where(self) + " reads lane " + std::to_string(source_lane) + ", which is outside the mask");
  }
  return w.slot[buffer][source_lane];
}

unsigned warp_ballot(unsigned mask, int predicate) {
  bool valid;
  warp_exchange(mask, predicate != 0, -1, &valid);
  const WarpState& w = running_block->warps[running_thread->linear / kWarpSize];
  const int buffer = (running_thread->warp_ops - 1) & 1;
  unsigned result = 0;
  for (int l = 0; l < kWarpSize; ++l) {
    if ((mask & (1u << l)) && w.slot[buffer][l]) result |= 1u << l;
  }
  return result;
}

void* shared_bytes(int site, size_t bytes, size_t align) {
  BlockState& b = *running_block;
  auto it = b.shared.find(site);
  if (it == b.shared.end()) {
    b.static_shared += bytes;
    if (b.static_shared + b.dynamic.size() > kMaxSharedBytes) {
      fail("cuda_emu: the block uses " + std::to_string(b.static_shared + b.dynamic.size()) +
           " bytes of shared memory, over the 48 KiB a launch gets without cudaFuncSetAttribute");
    }
    it = b.shared.emplace(site, std::make_pair(std::vector<unsigned char>(bytes + align, 0xFF), bytes)).first;
  } else if (it->second.second != bytes) {
    fail("cuda_emu: shared declaration " + std::to_string(site) + " changed size within a block");
  }
  auto address = reinterpret_cast<uintptr_t>(it->second.first.data());
  return reinterpret_cast<void*>((address + align - 1) & ~(uintptr_t(align) - 1));
}

void* dynamic_shared_bytes() { return running_block->dynamic.data(); }

cudaError_t launch_raw(KernelBody body, void* closure, dim3 grid, dim3 block, size_t dynamic_shared) {
  const uint64_t threads = uint64_t{block.x} * block.y * block.z;
  const bool bad_grid = grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7FFFFFFFu || grid.y > 65535 ||
                        grid.z > 65535;
  const bool bad_block = threads == 0 || threads > 1024 || block.z > 64;
  if (bad_grid || bad_block || dynamic_shared > kMaxSharedBytes) return last_error = cudaErrorInvalidConfiguration;
  BlockState b;
  b.dim = block;
  b.grid = grid;
  b.body = body;
  b.closure = closure;
  b.dynamic.resize(dynamic_shared);
  b.threads.resize(threads);
  b.warps.resize((threads + kWarpSize - 1) / kWarpSize);
  for (uint64_t i = 0; i < threads; ++i) {
    ThreadState& t = b.threads[i];
    t.linear = static_cast<int>(i);
    t.index = dim3(i % block.x, (i / block.x) % block.y, i / (uint64_t{block.x} * block.y));
    t.stack = take_stack();
  }
  // run_block throws on a kernel error; the stacks are then not reused (they may hold the abandoned threads' frames)
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        b.index = dim3(x, y, z);
        run_block(b);
      }
    }
  }
  for (ThreadState& t : b.threads) stack_pool.push_back(t.stack);
  return cudaSuccess;
}

}  // namespace cuda_emu

cudaError_t cudaGetLastError() {
  const cudaError_t e = cuda_emu::last_error;
  cuda_emu::last_error = cudaSuccess;
  return e;
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  if (attr != cudaDevAttrMultiProcessorCount) return cudaErrorInvalidValue;
  *value = 132;  // an H100 SXM
  return cudaSuccess;
}
