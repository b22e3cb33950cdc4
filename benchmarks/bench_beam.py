"""Tokens/s of beam search, ``pydecode.generate`` vs transformers' ``model.generate`` (default SmolLM2-135M).

A sweep over beams (4, 8), batch (1, 4) and prompt length (32, 256 tokens: input-grounded prompts are long), with
32 new tokens (``min_new_tokens`` too, so both run every step); the outputs must be identical (asserted). The two
providers take turns run by run after one untimed warm-up, so a load change on a shared machine hits both; each time
is the best of ``--repeats`` turns, in wall-clock and in process CPU time (less sensitive to other jobs). The
"beam step share" is the part of pydecode's time spent outside the model forward (log-softmax, the pipeline,
beam_topk, the finished-hypothesis bookkeeping and the cache reorder). Writes ``benchmarks/results/beam_<device>.csv``
and its plot (``.png``), and prints a markdown table headed by the machine, the versions, the load average and the
command.
Run: ``python benchmarks/bench_beam.py [--beams 4,8] [--batch 1,4] [--prompt-len 32,256] [--new-tokens 32]``
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch
import transformers

import pydecode
from pydecode.generation.model.runner import ModelRunner
from pydecode.models import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import machine, prompts  # noqa: E402
from plot_results import plot_csv  # noqa: E402


class _ForwardClock:
    """Adds up the time pydecode spends in the model forward (to split off the beam step's own time)."""

    def __init__(self):
        self.seconds = 0.0
        self._forward = ModelRunner._forward

    def __enter__(self):
        clock = self

        def timed(runner, input_ids, **kwargs):
            start = time.perf_counter()
            out = clock._forward(runner, input_ids, **kwargs)
            clock.seconds += time.perf_counter() - start
            return out

        ModelRunner._forward = timed
        return self

    def __exit__(self, *exc):
        ModelRunner._forward = self._forward


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_case(model, inputs, kwargs, device: str, repeats: int) -> dict:
    """Best wall and CPU seconds of each provider over interleaved turns, pydecode's forward share, both outputs."""
    fns = {"transformers": lambda: model.generate(**inputs, **kwargs),
           "pydecode": lambda: pydecode.generate(model, **inputs, **kwargs)}
    wall, cpu, outputs = {n: [] for n in fns}, {n: [] for n in fns}, {}
    forward = 0.0
    for _ in range(repeats):
        for name, fn in fns.items():
            with _ForwardClock() as clock:
                _sync(device)
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                outputs[name] = fn()
                _sync(device)
                wall[name].append(time.perf_counter() - start_wall)
                cpu[name].append(time.process_time() - start_cpu)
            if name == "pydecode" and wall[name][-1] == min(wall[name]):
                forward = clock.seconds
    assert torch.equal(outputs["pydecode"], outputs["transformers"]), f"outputs differ: {kwargs}"
    best = {n: (min(wall[n]), min(cpu[n])) for n in fns}
    return {"best": best, "forward_share": forward / best["pydecode"][0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--beams", default="4,8")
    parser.add_argument("--batch", default="1,4")
    parser.add_argument("--prompt-len", default="32,256")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", default=None, help="CSV path (default: benchmarks/results/beam_<device>.csv)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model)
    model.to(device)
    with torch.no_grad():  # warm-up, not timed
        warm = prompts(tokenizer, 1, 16, device)
        model.generate(**warm, num_beams=2, max_new_tokens=4)
        pydecode.generate(model, **warm, num_beams=2, max_new_tokens=4)
    load_before = os.getloadavg()
    rows = []
    for batch in (int(b) for b in args.batch.split(",")):
        for prompt_len in (int(p) for p in args.prompt_len.split(",")):
            inputs = prompts(tokenizer, batch, prompt_len, device)
            for beams in (int(b) for b in args.beams.split(",")):
                kwargs = dict(num_beams=beams, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
                with torch.no_grad():
                    result = run_case(model, inputs, kwargs, device, args.repeats)
                (hf_wall, hf_cpu), (pd_wall, pd_cpu) = result["best"]["transformers"], result["best"]["pydecode"]
                new = batch * args.new_tokens
                rows.append(dict(device=device, model=args.model, batch=batch, beams=beams, prompt_len=prompt_len,
                                 new_tokens=args.new_tokens, transformers_tok_s=round(new / hf_wall, 2),
                                 pydecode_tok_s=round(new / pd_wall, 2), speedup=round(hf_wall / pd_wall, 2),
                                 speedup_cpu_time=round(hf_cpu / pd_cpu, 2),
                                 beam_step_share=round(1.0 - result["forward_share"], 3)))
                print(rows[-1], file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"beam_{device}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_csv(out)
    env = "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS",) if k in os.environ)
    print(f"machine: {machine(device)}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"command: {env}python benchmarks/bench_beam.py {' '.join(sys.argv[1:])}\n")
    print("| beams | batch | prompt | new tokens | transformers tok/s | pydecode tok/s | speedup | speedup (CPU time) "
          "| beam step share |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['beams']} | {r['batch']} | {r['prompt_len']} | {r['new_tokens']} | {r['transformers_tok_s']} | "
              f"{r['pydecode_tok_s']} | {r['speedup']}x | {r['speedup_cpu_time']}x | {r['beam_step_share']:.1%} |")


if __name__ == "__main__":
    main()
