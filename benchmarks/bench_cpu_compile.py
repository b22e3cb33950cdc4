"""ms per decode step of the bare model (transformers' forward, static KV cache) under each CPU compile option.

Options: ``eager``; ``default`` (``torch.compile``); ``freezing`` (Inductor's ``freezing=True``: weights folded as
constants and prepacked for oneDNN; needs ``torch.no_grad``); ``max-autotune`` (Inductor's C++ GEMM templates
autotuned against ATen); ``pydecode-passes`` (``torch.compile`` with the post-grad passes ``generate(compile=True)``
installs on the CPU: few-row float32 matmuls on pydecode's ``decode_linear``, grouped-query attention without the
key / value repeat; :mod:`pydecode.generation.model.compile_passes`). Each in float32 and bfloat16 weights (bf16
matmuls are fast only with AVX-512 BF16 or AMX; the script prints what this CPU has), batch 1 and 16. Each case: a
prompt forward, ``--warmup`` steps (the first compiles: its time is the compile time), then ``--steps`` timed steps,
``--repeats`` times; the median counts.
Writes ``benchmarks/results/cpu_compile_cpu.csv`` (after every case) and its plot, and prints a markdown table.
Run: ``python benchmarks/bench_cpu_compile.py [--options eager,default,...,pydecode-passes] [--batches 1,16]``
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch._inductor.config as inductor_config
from bench_sampling import save_and_describe
from transformers import StaticCache

from pydecode.generation.model.compile_passes import inductor_patch
from pydecode.models import load_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cpu_features() -> str:
    """The CPU flags that decide the fast matmul paths, and torch's dispatch level."""
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
    have = [flag for flag in wanted if flag in flags]
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{', '.join(have) or 'none of ' + ', '.join(wanted)}; torch capability {capability}"


def compiled(forward, option: str):
    inductor_config.freezing = option == "freezing"
    torch._dynamo.reset()
    if option == "eager":
        return forward
    if option == "pydecode-passes":  # what generate(compile=True) adds on the CPU: decode_linear, GQA without copies
        return torch.compile(forward, fullgraph=True, options=inductor_patch(torch.device("cpu"), None, True))
    return torch.compile(forward, mode="max-autotune" if option == "max-autotune" else None, fullgraph=True)


def measure(model, option: str, batch: int, prompt: int, warmup: int, steps: int, repeats: int) -> dict:
    """Compile time (first step) and median ms per step for one option."""
    cache = StaticCache(config=model.config, max_cache_len=prompt + warmup + steps * repeats)
    forward = compiled(model.forward, option)
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt))
    with torch.no_grad():
        tokens = model(input_ids=ids, cache=cache, cache_position=torch.arange(prompt),
                       use_cache=True).logits[:, -1:].argmax(-1)

        def step(position: int):
            out = forward(input_ids=tokens, cache=cache, cache_position=torch.tensor([position]),
                          use_cache=True)
            return out.logits[:, -1:].argmax(-1)

        start = time.perf_counter()
        step(prompt)
        compile_s = time.perf_counter() - start
        for position in range(prompt + 1, prompt + warmup):
            step(position)
        runs = []
        for first in range(prompt + warmup, prompt + warmup + steps * repeats, steps):
            start = time.perf_counter()
            for position in range(first, first + steps):
                step(position)
            runs.append(1000 * (time.perf_counter() - start) / steps)
    return dict(ms_per_step=round(statistics.median(runs), 2), ms_min=round(min(runs), 2),
                ms_max=round(max(runs), 2), compile_s=round(compile_s, 1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--options", default="eager,default,freezing,max-autotune,pydecode-passes")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--prompt", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    args.device = "cpu"
    print(f"CPU features: {cpu_features()}", file=sys.stderr)
    rows = []
    for dtype in args.dtypes.split(","):
        model, _ = load_model(args.model)
        model.to(DTYPES[dtype]).eval()
        for batch in map(int, args.batches.split(",")):
            for option in args.options.split(","):
                result = measure(model, option, batch, args.prompt, args.warmup, args.steps, args.repeats)
                rows.append(dict(dtype=dtype, batch=batch, option=option, **result))
                print(f"done: {rows[-1]}", file=sys.stderr)
                save_and_describe(rows, args, f"random prompts of {args.prompt} tokens", argv, "cpu_compile")
    print(f"CPU features: {cpu_features()}\n")
    print("| dtype | batch | option | ms / step (min-max) | tokens/s | x eager | compile s |")
    print("|---|---|---|---|---|---|---|")
    eager = {(r["dtype"], r["batch"]): r["ms_per_step"] for r in rows if r["option"] == "eager"}
    for r in rows:
        base = eager.get((r["dtype"], r["batch"]))
        speedup = f"{base / r['ms_per_step']:.2f}x" if base else ""
        print(f"| {r['dtype']} | {r['batch']} | {r['option']} | {r['ms_per_step']} ({r['ms_min']}-{r['ms_max']}) | "
              f"{1000 * r['batch'] / r['ms_per_step']:.1f} | {speedup} | "
              f"{r['compile_s']} |")


if __name__ == "__main__":
    main()
