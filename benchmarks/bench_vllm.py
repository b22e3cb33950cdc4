"""vLLM offline throughput with its own sampler vs pydecode's (:mod:`pydecode.integrations.vllm.sampler`, a
``pydecode.Sampler`` underneath), on CPU.

One ``vllm.LLM`` (SmolLM2-135M-Instruct, float32) serves every run; ``LLM.collective_rpc`` swaps the model runner's
sampler between runs, wrapped in a timer that adds up each sampler call (per-step sampling time, ms). Each batch of
``--prompts`` requests mixes the parameters serving traffic brings (greedy; temperature + top-p; top-k; min-p;
penalties; seeded), ``--max-tokens`` new tokens each. The samplers alternate ``--repeats`` times after a warm-up
(load drifts hit both alike); the best run counts. Greedy requests must produce the same tokens with both (asserted).

Run with the side venv's python (tests/integrations/setup_vllm.sh), from anywhere:
``$VENV/bin/python benchmarks/bench_vllm.py [--prompts 64,256] [--max-tokens 32] [--repeats 2]``.
Writes ``benchmarks/results/vllm_cpu.csv`` (and its plot when matplotlib is installed) and prints a markdown table
headed by the machine, the versions and the command.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

# one unbound OpenMP thread per process, as the tests run vLLM on a shared CPU (set before vLLM is imported); the
# plugin on, so that the model runner keeps pydecode's batch state whichever sampler a run installs
for _key, _value in {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "2",
                     "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1",
                     "PYDECODE_VLLM_SAMPLER": "1"}.items():
    os.environ.setdefault(_key, _value)

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # plot_results, and this checkout's pydecode
TEXT = ("The old lighthouse keeper climbed the spiral stairs every evening, counting the steps as his father had "
        "taught him, and watched the ships pass on the grey water while the gulls circled overhead. ").split()


class TimedSampler:
    """Calls ``inner`` and adds up its wall time (CPU: the call is synchronous)."""

    def __init__(self, inner):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def install_sampler(worker, name):
    from vllm.v1.sample.sampler import Sampler

    from pydecode.integrations.vllm.sampler import PydecodeVllmSampler

    runner = worker.model_runner
    cls = PydecodeVllmSampler if name == "pydecode" else Sampler
    runner.sampler = TimedSampler(cls(logprobs_mode=runner.model_config.logprobs_mode))


def sampler_time(worker):
    return worker.model_runner.sampler.seconds, worker.model_runner.sampler.calls


def mixed_params(count: int, max_tokens: int):
    """``count`` sampling parameters cycling through six kinds of request (greedy first: its tokens are compared)."""
    from vllm import SamplingParams

    kinds = [dict(temperature=0.0), dict(temperature=0.8, top_p=0.95), dict(temperature=1.0, top_k=50),
             dict(temperature=0.7, min_p=0.05), dict(temperature=0.9, repetition_penalty=1.2, presence_penalty=0.3),
             dict(temperature=0.8, top_p=0.9, top_k=40)]
    return [SamplingParams(max_tokens=max_tokens, ignore_eos=True, seed=i if i % 2 else None, **kinds[i % len(kinds)])
            for i in range(count)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(Path.home() / ".cache/pydecode/smollm2-135m-instruct"))
    parser.add_argument("--prompts", default="64,256")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import torch
    import vllm
    from vllm import LLM

    counts = [int(n) for n in args.prompts.split(",")]
    llm = LLM(model=args.model, dtype="float32", max_model_len=256, max_num_seqs=max(counts), enforce_eager=True,
              seed=0)
    rows = []
    for count in counts:
        prompts = [" ".join(TEXT[i % 20: i % 20 + 8 + i % 5]) for i in range(count)]
        params = mixed_params(count, args.max_tokens)
        best, greedy_tokens = {}, {}
        for run in range(args.repeats + 1):  # run 0 warms up
            for name in ("vllm", "pydecode"):
                llm.collective_rpc(install_sampler, args=(name,))
                start = time.perf_counter()
                outputs = llm.generate(prompts, params, use_tqdm=False)
                seconds = time.perf_counter() - start
                sampling, calls = llm.collective_rpc(sampler_time)[0]
                greedy_tokens[name] = [o.outputs[0].token_ids for o, p in zip(outputs, params) if p.temperature == 0]
                tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
                if run and (name not in best or seconds < best[name][0]):
                    best[name] = (seconds, tokens, 1000 * sampling / calls)
        assert greedy_tokens["pydecode"] == greedy_tokens["vllm"], "greedy tokens differ between the samplers"
        for name, (seconds, tokens, step_ms) in best.items():
            rows.append({"prompts": count, "sampler": name, "max_tokens": args.max_tokens, "seconds": f"{seconds:.2f}",
                         "tokens_per_s": f"{tokens / seconds:.1f}", "sampling_ms_per_step": f"{step_ms:.2f}"})
    out = HERE / "results" / "vllm_cpu.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    from plot_results import plot_csv

    plot_csv(out)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "cpu")
    print(f"Machine: {cpu}, {os.cpu_count()} cores; vLLM {vllm.__version__}, torch {torch.__version__}")
    print(f"Command: {' '.join(['python'] + sys.argv)}\n")
    print("| prompts | sampler | tokens/s | sampling ms/step | pydecode / vLLM tokens/s |")
    print("|---|---|---|---|---|")
    for row in rows:
        base = next(r for r in rows if r["prompts"] == row["prompts"] and r["sampler"] == "vllm")
        ratio = float(row["tokens_per_s"]) / float(base["tokens_per_s"])
        print(f"| {row['prompts']} | {row['sampler']} | {row['tokens_per_s']} | {row['sampling_ms_per_step']} | "
              f"{ratio:.2f}x |")


if __name__ == "__main__":
    main()
