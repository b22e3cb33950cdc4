// Emulated for tests: the device guard of torch's CUDA build, a no-op on the host.
#pragma once
#include <c10/core/Device.h>

#include "cuda_runtime.h"

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
}  // namespace c10::cuda
