#!/usr/bin/env bash
# Compile every CUDA template header standalone (no torch) for sm_80 and sm_90, so CI catches CUDA errors on a
# machine without a GPU. Each csrc/include/pydecode/*.cuh gets a tiny translation unit that includes it and, where
# listed below, explicitly instantiates its templates for float / half / bfloat16.
# Usage: csrc/check_cuda.sh   (needs nvcc; NVCC=/path/to/nvcc to pick one)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nvcc="${NVCC:-nvcc}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

instantiations() {  # explicit instantiations for one header name
  case "$1" in
    sampling.cuh)
      for t in float __half __nv_bfloat16; do
        echo "template cudaError_t pydecode::sample_cuda<$t>(const $t*, int64_t, int64_t, const pydecode::SampleParams&, int64_t*, float*, float*, cudaStream_t);"
        echo "template cudaError_t pydecode::logprobs_cuda<$t>(const $t*, const int64_t*, int64_t, int64_t, int64_t, float*, float*, int64_t*, cudaStream_t);"
      done ;;
    verify.cuh)
      for t in float __half __nv_bfloat16; do
        echo "template cudaError_t pydecode::verify_cuda<$t>(const int64_t*, const $t*, const $t*, const int64_t*, const float*, float, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t*, int64_t*, cudaStream_t);"
      done ;;
  esac
}

status=0
for header in "$here"/include/pydecode/*.cuh; do
  name="$(basename "$header")"
  unit="$work/${name%.cuh}_check.cu"
  { echo "#include \"pydecode/$name\""; instantiations "$name"; } > "$unit"
  for arch in 80 90; do
    if "$nvcc" -c -std=c++17 -O2 --use_fast_math -Werror all-warnings -I "$here/include" \
         -gencode "arch=compute_$arch,code=sm_$arch" -o "$work/out.o" "$unit"; then
      echo "ok    $name sm_$arch"
    else
      echo "FAIL  $name sm_$arch"; status=1
    fi
  done
done
exit $status
