"""Tokens/s of ``pydecode.generate`` vs transformers' ``model.generate`` on a real model (default SmolLM2-135M).

Greedy and sampling, over batch sizes, prompt lengths, and unpadded or left-padded (mixed-length) prompts. The two
providers run in turn (interleaved, so a change in machine load hits both alike) ``--repeats`` times after a warm-up
(``--big-repeats`` from batch ``--big-batch`` up); each row reports the median time, the min-max spread of the runs
and the median of the per-run ratios. Greedy tokens must be identical (asserted). Writes
``benchmarks/results/generate_<device>.csv`` and its plot (``.png``), and prints a markdown table headed by the
machine, the versions and the command.
Run: ``python benchmarks/bench_generate.py [--device cpu|cuda] [--batch-sizes 1,4,16,64] ...``
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
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


def prompts(tokenizer, batch: int, length: int, device: str, padded: bool = False) -> dict:
    """``batch`` different prompts (windows of a repeated paragraph) of ``length`` tokens; with ``padded``, row ``i``
    keeps only its last ``length - (i * 5) % (length // 2)`` tokens and is left-padded to ``length``."""
    ids = tokenizer(TEXT * (1 + (length + 7 * batch) // 20), return_tensors="pt").input_ids[0]
    rows = torch.stack([ids[row * 7: row * 7 + length] for row in range(batch)])
    mask = torch.ones_like(rows)
    if padded:
        for row in range(batch):
            mask[row, : (row * 5) % max(1, length // 2)] = 0
        rows = rows.masked_fill(mask == 0, tokenizer.pad_token_id or 0)
    return {"input_ids": rows.to(device), "attention_mask": mask.to(device)}


def timed(fns: dict, device: str, repeats: int) -> tuple[dict, dict]:
    """Warm each function up, then run them in turn ``repeats`` times (interleaved).

    Returns ``({name: [seconds of each run]}, {name: last output})``.
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
    return seconds, outputs


def run_case(model, inputs, mode: str, new_tokens: int, device: str, repeats: int) -> list[dict]:
    strategy = SAMPLING if mode == "sample" else dict(do_sample=False)
    kwargs = dict(max_new_tokens=new_tokens, return_dict_in_generate=True, **strategy)

    def hf():
        torch.manual_seed(0)
        return model.generate(**inputs, **kwargs)

    def ours():
        return pydecode.generate(model, **inputs, seed=0, **kwargs)

    prompt_length = inputs["input_ids"].shape[1]
    seconds, outputs = timed({"transformers": hf, "pydecode": ours}, device, repeats)
    ratios = [hf_s / ours_s for hf_s, ours_s in zip(seconds["transformers"], seconds["pydecode"])]
    rows = []
    for provider, runs in seconds.items():
        out = outputs[provider]
        generated = out.sequences[:, prompt_length:].numel()
        syncs = getattr(out, "host_syncs", None)
        steps = out.sequences.shape[1] - prompt_length
        median = statistics.median(runs)
        rows.append(dict(provider=provider, repeats=repeats, seconds=round(median, 4), tokens=generated,
                         tokens_per_s=round(generated / median, 1),
                         tokens_per_s_min=round(generated / max(runs), 1),
                         tokens_per_s_max=round(generated / min(runs), 1),
                         speedup=round(statistics.median(ratios), 3) if provider == "pydecode" else 1.0,
                         host_syncs_per_token="" if syncs is None else round(syncs / steps, 3)))
    if mode == "greedy":
        assert torch.equal(outputs["pydecode"].sequences, outputs["transformers"].sequences), \
            "greedy tokens differ from transformers"
    return rows


def save(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_table(rows: list[dict]) -> None:
    print("| mode | batch | prompt | padding | repeats | transformers tok/s (min-max) | pydecode tok/s (min-max) "
          "| pydecode / transformers (median of runs) | host syncs/token |")
    print("|---|---|---|---|---|---|---|---|---|")
    for hf, ours in zip(rows[::2], rows[1::2]):
        print(f"| {hf['mode']} | {hf['batch']} | {hf['prompt_length']} | {hf['padding']} | {hf['repeats']} | "
              f"{hf['tokens_per_s']} ({hf['tokens_per_s_min']}-{hf['tokens_per_s_max']}) | "
              f"{ours['tokens_per_s']} ({ours['tokens_per_s_min']}-{ours['tokens_per_s_max']}) | "
              f"{ours['speedup']:.2f}x | {ours['host_syncs_per_token']} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--modes", default="greedy,sample")
    parser.add_argument("--batch-sizes", default="1,4,16,64")
    parser.add_argument("--prompt-lengths", default="32")
    parser.add_argument("--padding", default="none,left", help="none (equal lengths) and/or left (mixed, padded)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--big-batch", type=int, default=64, help="batches from this size run --big-repeats times")
    parser.add_argument("--big-repeats", type=int, default=3)
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    model, tokenizer = load_model(args.model)
    model.to(args.device)
    out = Path(args.out_dir) / f"generate_{args.device}.csv"
    rows = []
    for mode in args.modes.split(","):
        for batch in map(int, args.batch_sizes.split(",")):
            repeats = args.big_repeats if batch >= args.big_batch else args.repeats
            for length in map(int, args.prompt_lengths.split(",")):
                for padding in args.padding.split(","):
                    inputs = prompts(tokenizer, batch, length, args.device, padded=padding == "left")
                    for row in run_case(model, inputs, mode, args.max_new_tokens, args.device, repeats):
                        rows.append(dict(device=args.device, mode=mode, batch=batch, prompt_length=length,
                                         padding=padding, **row))
                    save(rows, out)  # after every case, so that a run cut short keeps what it measured
                    print(f"done: {mode} batch={batch} prompt={length} padding={padding}: "
                          f"{rows[-1]['speedup']:.2f}x", file=sys.stderr)
    plot_csv(out)

    print(f"Machine: {machine(args.device)}; torch {torch.__version__}, transformers {transformers.__version__}")
    env = "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS", "PYDECODE_BACKEND") if k in os.environ)
    flags = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"Command: {env}python benchmarks/bench_generate.py {flags}")
    print(f"CSV: {out}\n")
    write_table(rows)


if __name__ == "__main__":
    main()
