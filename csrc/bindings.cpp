// The one TORCH_LIBRARY(pydecode, m) block: every op's schema, in one place.
// Implementations register per device in csrc/cpu/*.cpp (TORCH_LIBRARY_IMPL(pydecode, CPU, m)) and
// csrc/cuda/*.cu (TORCH_LIBRARY_IMPL(pydecode, CUDA, m)); fake/meta kernels live in pydecode/ops/native.py.
#include <ATen/ATen.h>
#include <torch/library.h>

namespace pydecode {
bool built_with_cuda() {
#ifdef PYDECODE_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace pydecode

TORCH_LIBRARY(pydecode, m) {
  m.def("built_with_cuda() -> bool", &pydecode::built_with_cuda);
  // --- sampling ops (issue: fused sampling kernels) ---
  // --- KV-cache ops (issue: KIVI cache) ---
}

// Python imports this module as pydecode._C; the ops live in torch.ops.pydecode.
#include <Python.h>
static struct PyModuleDef pydecode_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&pydecode_module); }
