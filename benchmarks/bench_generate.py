"""Tokens/s of ``pydecode.generate`` vs transformers' ``model.generate`` on a real model (default SmolLM2-135M).

Greedy and sampling, over prompt lengths and batch sizes; greedy tokens must be identical (asserted). Each time
is the best of ``--repeats`` runs. Writes ``benchmarks/results/generate_<device>.csv`` and its plot (``.png``), and
prints a markdown table headed by the machine, the versions and the command.
Run: ``python benchmarks/bench_generate.py [--device cpu|cuda] [--batch-sizes 1,4] ...``
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
from plot_results import plot_csv

import pydecode
from pydecode.models import load_model

TEXT = ("The old lighthouse keeper climbed the spiral stairs every evening, counting the steps as his father had "
        "taught him, and watched the ships pass on the grey water while the gulls circled overhead. ")
SAMPLING = dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.95)


def machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def prompts(tokenizer, batch: int, length: int, device: str) -> dict:
    """``batch`` different prompts of exactly ``length`` tokens (windows of a repeated paragraph), no padding."""
    ids = tokenizer(TEXT * (1 + length // 20), return_tensors="pt").input_ids[0]
    rows = torch.stack([ids[row * 7: row * 7 + length] for row in range(batch)])
    return {"input_ids": rows.to(device), "attention_mask": torch.ones_like(rows).to(device)}


def timed(fns: dict, device: str, repeats: int):
    """Warm each function up, then run them in turn ``repeats`` times (interleaved, so load drifts hit both alike).

    Returns ``{name: (best seconds, last output)}``.
    """
    for fn in fns.values():
        fn()
    seconds, outputs = {name: [] for name in fns}, {}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            outputs[name] = fn()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
    return {name: (min(seconds[name]), outputs[name]) for name in fns}


def run_case(model, inputs, mode: str, new_tokens: int, device: str, repeats: int) -> list[dict]:
    strategy = SAMPLING if mode == "sample" else dict(do_sample=False)
    kwargs = dict(max_new_tokens=new_tokens, return_dict_in_generate=True, **strategy)

    def hf():
        torch.manual_seed(0)
        return model.generate(**inputs, **kwargs)

    def ours():
        return pydecode.generate(model, **inputs, seed=0, **kwargs)

    prompt_length = inputs["input_ids"].shape[1]
    rows, results = [], {}
    for provider, (seconds, out) in timed({"transformers": hf, "pydecode": ours}, device, repeats).items():
        results[provider] = out.sequences
        generated = out.sequences[:, prompt_length:].numel()
        syncs = getattr(out, "host_syncs", None)
        steps = out.sequences.shape[1] - prompt_length
        rows.append(dict(provider=provider, seconds=round(seconds, 4), tokens=generated,
                         tokens_per_s=round(generated / seconds, 1),
                         host_syncs_per_token="" if syncs is None else round(syncs / steps, 3)))
    if mode == "greedy":
        assert torch.equal(results["pydecode"], results["transformers"]), "greedy tokens differ from transformers"
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--prompt-lengths", default="16,256")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    model, tokenizer = load_model(args.model)
    model.to(args.device)
    rows = []
    for mode in ("greedy", "sample"):
        for batch in map(int, args.batch_sizes.split(",")):
            for length in map(int, args.prompt_lengths.split(",")):
                inputs = prompts(tokenizer, batch, length, args.device)
                for row in run_case(model, inputs, mode, args.max_new_tokens, args.device, args.repeats):
                    rows.append(dict(device=args.device, mode=mode, batch=batch, prompt_length=length, **row))
                print(f"done: {mode} batch={batch} prompt={length}", file=sys.stderr)

    out = Path(args.out_dir) / f"generate_{args.device}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_csv(out)

    print(f"Machine: {machine(args.device)}; torch {torch.__version__}, transformers {transformers.__version__}")
    env = "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS", "PYDECODE_BACKEND") if k in os.environ)
    flags = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"Command: {env}python benchmarks/bench_generate.py {flags}")
    print(f"CSV: {out}\n")
    print("| mode | batch | prompt | transformers tok/s | pydecode tok/s | pydecode / transformers "
          "| host syncs/token |")
    print("|---|---|---|---|---|---|---|")
    for hf, ours in zip(rows[::2], rows[1::2]):
        print(f"| {hf['mode']} | {hf['batch']} | {hf['prompt_length']} | {hf['tokens_per_s']} | "
              f"{ours['tokens_per_s']} | {ours['tokens_per_s'] / hf['tokens_per_s']:.2f}x | "
              f"{ours['host_syncs_per_token']} |")


if __name__ == "__main__":
    main()
