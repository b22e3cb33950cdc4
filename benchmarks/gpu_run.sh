#!/usr/bin/env bash
# The GPU session's script (a lent machine, see /work/.library/device): build with CUDA, run the GPU tests, run the
# GPU benchmarks, print a short table last. Results land in benchmarks/results/gpu/ and, when $OUT is set, in $OUT.
#
#   benchmarks/gpu_run.sh [STAGE ...]    stages: build test sampling kv_cache beam generate e2e (default: all, in order)
#
# A device call lasts 10 minutes at most and a session has 15 minutes of device time, machine start included, so
# run "build test", then "sampling kv_cache beam" (and "generate e2e" if time is left) in the next call, before the
# warm machine is given back (30 s idle).
#
# The real models cannot travel (no package index there; SmolLM2's GGUF is over a call's carry), so the model
# benchmarks use random-weight models of real shapes (pydecode/random_models.py). FlashInfer runs beside pydecode's
# sampler when .whl/ holds its wheels (benchmarks/fetch_gpu_wheels.sh here, then carry ".whl").
set -uo pipefail
cd "$(dirname "$0")/.."
stages=" ${*:-build test sampling kv_cache beam generate e2e} "
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}  # the CUDA sources compile in parallel (ninja)
results=benchmarks/results/gpu
mkdir -p "$results"
log() { echo "== $(date +%T) $*"; }
collect() {  # after every stage, so that a call cut short by the device budget still returns what it finished
  [ -n "${OUT:-}" ] && tar czf "$OUT/gpu_results.tgz" -C benchmarks/results gpu  # $OUT returns 8 files at most
}
bench() {  # bench NAME SECONDS COMMAND...: stdout to NAME.md, stderr to NAME.err
  local name=$1 limit=$2
  shift 2
  log "$name"
  timeout "$limit" "$@" > "$results/$name.md" 2> "$results/$name.err"
  echo "   exit $?"
  collect
}

if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi

if [[ $stages == *" build "* ]]; then
  log build
  python3 -m pip install -q --no-build-isolation --no-deps -e . 2>&1 | tail -5
  python3 -c "import pydecode, json; print(json.dumps(pydecode.backends()))"
fi

if [[ $stages == *" test "* ]]; then
  log tests
  timeout 420 python3 -m pytest -q -p no:cacheprovider tests/ops tests/cache tests/generation/test_greedy_parity.py \
    tests/generation/test_beam_parity.py tests/generation/test_every_backend.py \
    "tests/generation/test_compiled_beam.py::test_reduce_overhead_cuda_graphs_reuse_the_state" 2>&1 | tee "$results/gpu_tests.log" | tail -15
  collect
fi

[[ $stages == *" sampling "* ]] && bench sampling_cuda 240 python3 benchmarks/bench_sampling.py --device cuda \
  --skip-reference --out-dir "$results"
[[ $stages == *" kv_cache "* ]] && bench kv_cache_cuda 180 python3 benchmarks/bench_kv_cache.py --device cuda \
  --models smollm2-random llama-1b-random --sections attention decode memory \
  --attention-contexts 1024 8192 32768 131072 --contexts 1024 8192 32768 --memory-tokens 4096 32768 --repeat 20 \
  --out "$results"
[[ $stages == *" beam "* ]] && bench beam_cuda 150 python3 benchmarks/bench_beam.py --model llama-1b-random \
  --beams 4,8 --batch 1,8 --prompt-len 256 --new-tokens 32 --repeats 2 --out "$results/beam_cuda.csv"
[[ $stages == *" generate "* ]] && bench generate_cuda 120 python3 benchmarks/bench_generate.py --device cuda \
  --model llama-1b-random --batch-sizes 1,16 --repeats 3 --out-dir "$results"
[[ $stages == *" e2e "* ]] && bench e2e_cuda 240 python3 benchmarks/bench_e2e.py --device cuda --dtypes bf16 \
  --batches 1,16 --repeats 2 --out-dir "$results"

log summary
[ -f "$results/gpu_tests.log" ] && grep -E "passed|failed|error" "$results/gpu_tests.log" | tail -1
for name in sampling_cuda kv_cache_cuda beam_cuda generate_cuda e2e_cuda; do
  [ -f "$results/$name.md" ] || continue
  echo "-- $name"
  [ -s "$results/$name.md" ] || { tail -5 "$results/$name.err"; continue; }
  case $name in
    sampling_cuda) grep -E "^\| (top_k_top_p_min_p|top_p|top_k) \| 64 \| 128256" "$results/$name.md" ;;
    kv_cache_cuda) grep -E "^\| llama-1b-random \| (8192|32768|131072) \| (sdpa fp|kivi. cuda|fp|kivi.) \|" \
      "$results/$name.md" ;;
    *) tail -6 "$results/$name.md" ;;
  esac || tail -5 "$results/$name.err"
done
