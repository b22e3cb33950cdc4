"""Tokens/s of beam search, ``pydecode.generate`` vs transformers' ``model.generate`` (default SmolLM2-135M).

For 4 and 8 beams; the outputs must be identical (asserted). Each time is the best of ``--repeats`` runs; the
"beam step share" is the part of pydecode's time spent outside the model forward (log-softmax, the pipeline,
beam_topk, the finished-hypothesis bookkeeping and the cache reorder). Writes ``benchmarks/results/beam_<device>.csv``
and prints a markdown table headed by the machine, the versions and the command.
Run: ``python benchmarks/bench_beam.py [--beams 4,8] [--batch 1] [--prompt-len 32] [--new-tokens 32]``
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch
import transformers

import pydecode
from pydecode.generation.runner import ModelRunner
from pydecode.models import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import machine, prompts  # noqa: E402


class _ForwardClock:
    """Adds up the time pydecode spends in the model forward (to split off the beam step's own time)."""

    def __init__(self):
        self.seconds = 0.0
        self._forward = ModelRunner._forward

    def __enter__(self):
        clock = self

        def timed(runner, input_ids):
            start = time.perf_counter()
            out = clock._forward(runner, input_ids)
            clock.seconds += time.perf_counter() - start
            return out

        ModelRunner._forward = timed
        return self

    def __exit__(self, *exc):
        ModelRunner._forward = self._forward


def best_of(repeats: int, fn):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--beams", default="4,8")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_model(args.model)
    model.to(device)
    inputs = prompts(tokenizer, args.batch, args.prompt_len, device)
    rows = []
    for beams in (int(b) for b in args.beams.split(",")):
        kwargs = dict(num_beams=beams, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)
        with torch.no_grad():
            t_hf, want = best_of(args.repeats, lambda: model.generate(**inputs, **kwargs))
            with _ForwardClock() as clock:
                t_pd, got = best_of(args.repeats, lambda: pydecode.generate(model, **inputs, **kwargs))
        assert got.tolist() == want.tolist(), f"outputs differ with {beams} beams"
        new = args.batch * args.new_tokens
        share = 1.0 - clock.seconds / args.repeats / t_pd if t_pd else 0.0
        rows.append(dict(device=device, model=args.model, batch=args.batch, beams=beams, prompt_len=args.prompt_len,
                         new_tokens=args.new_tokens, transformers_tok_s=round(new / t_hf, 2),
                         pydecode_tok_s=round(new / t_pd, 2), speedup=round(t_hf / t_pd, 2),
                         beam_step_share=round(share, 3)))
    out = Path(__file__).resolve().parent / "results" / f"beam_{device}.csv"
    out.parent.mkdir(exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"machine: {machine(device)}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"command: python benchmarks/bench_beam.py {' '.join(sys.argv[1:])}\n")
    print("| beams | batch | new tokens | transformers tok/s | pydecode tok/s | speedup | beam step share |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['beams']} | {r['batch']} | {r['new_tokens']} | {r['transformers_tok_s']} | {r['pydecode_tok_s']} "
              f"| {r['speedup']}x | {r['beam_step_share']:.1%} |")


if __name__ == "__main__":
    main()
