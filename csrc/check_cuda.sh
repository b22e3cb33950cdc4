#!/usr/bin/env bash
# Compile every CUDA template header standalone (no torch) for sm_80 and sm_90, so CI catches CUDA errors on a
# machine without a GPU. Each csrc/<op>/kernel.cuh and csrc/include/pydecode/*.cuh gets a tiny translation unit that
# includes it and, where listed below, explicitly instantiates its templates for float / half / bfloat16. Then, where
# torch imports, the ATen adapters csrc/<op>/cuda.cu compile with nvcc against torch's headers with the flags of
# torch's CUDA extensions (a CPU torch lacks one generated header, c10/cuda/impl/cuda_cmake_macros.h: a stub stands
# in for it).
# Usage: csrc/check_cuda.sh   (needs nvcc; NVCC=/path/to/nvcc, PYTHON=/path/to/python to pick them)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nvcc="${NVCC:-nvcc}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

instantiations() {  # explicit instantiations for one header, named by its path under csrc/
  case "$1" in
    top_k_top_p_sample/kernel.cuh)
      for t in float __half __nv_bfloat16; do
        echo "template cudaError_t pydecode::sample_cuda<$t>(const $t*, int64_t, int64_t, const pydecode::SampleParams&, int64_t*, float*, float*, cudaStream_t);"
      done ;;
    token_logprobs/kernel.cuh)
      for t in float __half __nv_bfloat16; do
        echo "template cudaError_t pydecode::logprobs_cuda<$t>(const $t*, const int64_t*, int64_t, int64_t, int64_t, float*, float*, int64_t*, cudaStream_t);"
      done ;;
    verify/kernel.cuh)
      for t in float __half __nv_bfloat16; do
        echo "template cudaError_t pydecode::verify_cuda<$t>(const int64_t*, const $t*, const $t*, const int64_t*, const float*, float, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t*, int64_t*, cudaStream_t);"
      done ;;
  esac
}

status=0
for header in "$here"/*/kernel.cuh "$here"/include/pydecode/*.cuh; do
  name="${header#"$here"/}"
  unit="$work/${name//\//_}_check.cu"
  { echo "#include \"$name\""; instantiations "$name"; } > "$unit"
  for arch in 80 90; do
    if "$nvcc" -c -std=c++17 -O2 --use_fast_math -Werror all-warnings -I "$here" -I "$here/include" \
         -gencode "arch=compute_$arch,code=sm_$arch" -o "$work/out.o" "$unit"; then
      echo "ok    $name sm_$arch"
    else
      echo "FAIL  $name sm_$arch"; status=1
    fi
  done
done
python="${PYTHON:-python}"
if torch_flags="$("$python" - <<'PY' 2>/dev/null
from torch.utils.cpp_extension import COMMON_NVCC_FLAGS, include_paths
print(" ".join(COMMON_NVCC_FLAGS + ["-I" + p for p in include_paths()]))
PY
)"; then
  mkdir -p "$work/stub/c10/cuda/impl"
  echo "#pragma once" > "$work/stub/c10/cuda/impl/cuda_cmake_macros.h"
  for adapter in "$here"/*/cuda.cu; do
    name="${adapter#"$here"/}"
    # shellcheck disable=SC2086  # torch_flags is a list of flags
    if "$nvcc" -c -std=c++20 -O1 --use_fast_math -DNDEBUG -DPYDECODE_WITH_CUDA=1 -Xcompiler -fPIC $torch_flags \
         -I "$work/stub" -I "$here/include" -gencode "arch=compute_90,code=sm_90" -o "$work/out.o" \
         "$adapter" 2> "$work/log"; then
      echo "ok    $name (ATen adapter) sm_90"
    else
      cat "$work/log"; echo "FAIL  $name (ATen adapter) sm_90"; status=1
    fi
  done
else
  echo "skip  ATen adapters: torch does not import with $python"
fi
exit $status
