#!/usr/bin/env bash
# Fetch, on this machine, the wheels the lent GPU machine lacks (it has no package index) into .whl/ (git-ignored):
# FlashInfer for the sampling side-by-side and its FFI runtime, built for the GPU machine's Python 3.12. FlashInfer
# 0.6.1 is its JIT wheel (7.6 MB; 0.7 is over 100 MB, above a call's 64 MiB carry); pynvml, its other import-time
# need, is already there. A run then names ".whl" in carry; benchmarks/gpu_run.sh installs them into /tmp/site.
set -euo pipefail
cd "$(dirname "$0")/.."
pip=(python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl)
"${pip[@]}" flashinfer-python==0.6.1 "apache-tvm-ffi>=0.1.6,<0.2,!=0.1.8,!=0.1.8.post0"
ls -la .whl
