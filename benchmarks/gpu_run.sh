#!/usr/bin/env bash
# One call on a lent GPU machine (see /work/.library/device): build with CUDA, run the GPU tests, run the GPU
# benchmarks, and print a short table last. Results land in benchmarks/results/ and, when $OUT is set, in $OUT too.
#
# FlashInfer for the side-by-side: its wheel nearly fills one call's carry, so install it into /tmp/site on the warm
# machine in a first call (`pip install --no-index --no-deps --target /tmp/site .whl/*.whl`), then run this script
# in the next call; it puts /tmp/site on PYTHONPATH when present.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}  # the CUDA sources compile in parallel (ninja)
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
results=benchmarks/results
log() { echo "== $*"; }

log build
python -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -5
python -c "import pydecode, json; print(json.dumps(pydecode.backends(), indent=1))"

log gpu tests
python -m pytest -q -p no:cacheprovider tests/ops tests/cache tests/generation/test_greedy_parity.py 2>&1 \
  | tee "$results/gpu_tests.log" | tail -15

log benchmarks
python benchmarks/bench_sampling.py --device cuda --skip-reference > "$results/sampling_cuda.md" 2> "$results/sampling_cuda.err"
python benchmarks/bench_generate.py --device cuda > "$results/generate_cuda.md" 2> "$results/generate_cuda.err"
[ -n "${OUT:-}" ] && cp "$results"/*cuda* "$results/gpu_tests.log" "$OUT"/ 2>/dev/null

log summary
grep -E "passed|failed" "$results/gpu_tests.log" | tail -1
grep -E "^\| (top_k_top_p_min_p|top_p) \| 64 \| 128256" "$results/sampling_cuda.md" || tail -20 "$results/sampling_cuda.md"
tail -8 "$results/generate_cuda.md"
