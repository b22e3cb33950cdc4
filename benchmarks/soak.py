"""Soak run: many consecutive ``pydecode.generate`` calls with varying shapes and strategies on one model, watching
resident memory, open file descriptors and threads; then the KIVI cache at a long context allocated and freed
repeatedly. A script, not a test: it prints a table and writes ``results/soak_cpu.csv`` (one row per sample)
and ``results/soak_kivi_cpu.csv`` (one row per KIVI cycle).

    python benchmarks/soak.py                               # KIVI at 32k tokens x 20, then 2,000 calls on SmolLM2
    python benchmarks/soak.py --calls 300 --kivi-cycles 5   # a shorter run
    python benchmarks/soak.py --max-seconds 1800            # as many calls as 30 minutes allow (a loaded machine)
    python benchmarks/soak.py --max-batch 2 --max-prompt 16 --max-new-tokens 3   # 2,000 short calls (a loaded machine)

Memory is flat when the least-squares slope of RSS over the calls after the warm-up is near 0 (reported in KiB per
call: a leak of one 49152-entry float32 row per call would show as 192 KiB/call). The warm-up is ``--warmup`` calls,
or the first half of the calls made when the run stopped before ``2 * --warmup``.
"""
from __future__ import annotations

import argparse
import csv
import gc
import os
import platform
import sys
import threading
import time
from pathlib import Path

import torch

import pydecode
from pydecode.cache import make_cache
from pydecode.models import load_model

RESULTS = Path(__file__).resolve().parent / "results"
STRATEGIES = [  # cycled through, with the shapes below
    dict(do_sample=False),
    dict(do_sample=True, temperature=0.8, top_k=50, top_p=0.9),
    dict(do_sample=True, min_p=0.1, repetition_penalty=1.2, frequency_penalty=0.3),
    dict(num_beams=3, num_return_sequences=2, do_sample=False),
    dict(do_sample=True, output_logprobs=True, top_logprobs=3, return_dict_in_generate=True),
    dict(do_sample=False, no_repeat_ngram_size=2, output_scores=True, return_dict_in_generate=True),
]


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def slope(xs, ys) -> float:
    """Least-squares slope of ys over xs."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


def one_call(model, vocab, i, gen, max_batch=4, max_prompt=64, max_new_tokens=16):
    """Call ``i``: the i-th strategy, batch 1-``max_batch`` (the first row left-padded), prompt 4-``max_prompt``
    tokens, 1-``max_new_tokens`` new tokens."""
    # the batch steps once per strategy cycle, so that every strategy meets every batch size
    batch = 1 + (i // len(STRATEGIES)) % max_batch
    length = 4 + (i * 7) % (max_prompt - 3)
    ids = torch.randint(10, vocab, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, : length // 3] = 0
    kwargs = dict(STRATEGIES[i % len(STRATEGIES)], max_new_tokens=1 + (i * 5) % max_new_tokens, seed=i)
    if not kwargs.get("do_sample"):
        kwargs.pop("seed")
    pydecode.generate(model, ids, attention_mask=mask, pad_token_id=0, **kwargs)


def kivi_cycles(model, cycles, tokens):
    """Allocate the KIVI cache (its store preallocated for ``tokens`` tokens, batch 1) and free it; RSS after each."""
    rss = []
    for _ in range(cycles):
        cache = make_cache("kivi", {"nbits": 4, "group_size": 32, "residual_length": 128}, model, 1, tokens)
        footprint = cache.memory_footprint()
        del cache
        gc.collect()
        rss.append(resident_mib())
    return rss, footprint


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--sample-every", type=int, default=10)
    parser.add_argument("--kivi-cycles", type=int, default=20)
    parser.add_argument("--kivi-tokens", type=int, default=32768)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--max-prompt", type=int, default=64, help="longest prompt (tokens, >= 4)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--max-seconds", type=float, default=float("inf"), help="stop the calls after this long")
    args = parser.parse_args()
    if args.max_batch < 1 or args.max_prompt < 4 or args.max_new_tokens < 1:
        parser.error("--max-batch and --max-new-tokens must be >= 1, --max-prompt >= 4")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"soak: {' '.join(sys.argv)} | torch {torch.__version__} | {platform.machine()}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads", flush=True)
    model, tokenizer = load_model(args.model)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "soak_cpu.csv"
    kivi_rss, footprint = kivi_cycles(model, args.kivi_cycles, args.kivi_tokens)
    with (RESULTS / "soak_kivi_cpu.csv").open("w", newline="") as f:
        kv_mib = round(footprint["total_bytes"] / 2**20, 2)
        csv.writer(f).writerows([("cycle", "rss_mib", "kivi_tokens", "kv_mib")] + [
            (c, round(r, 2), args.kivi_tokens, kv_mib) for c, r in enumerate(kivi_rss)])
    kivi_slope = slope(list(range(len(kivi_rss))), kivi_rss) if len(kivi_rss) > 1 else 0.0
    kivi_line = (f"KIVI cache, {args.kivi_tokens} tokens, {args.kivi_cycles} allocate/free cycles: RSS "
                 f"{kivi_rss[0]:.1f} -> {kivi_rss[-1]:.1f} MiB (slope {kivi_slope:.2f} MiB/cycle), "
                 f"KV memory {footprint['total_bytes'] / 2**20:.1f} MiB")
    print(kivi_line, flush=True)
    rows, start = [], time.perf_counter()
    with out.open("w", newline="") as f:  # written as it goes: a run cut short still leaves its samples
        writer = csv.DictWriter(f, fieldnames=["call", "rss_mib", "fds", "os_threads", "py_threads", "seconds"])
        writer.writeheader()
        for i in range(args.calls):
            one_call(model, vocab, i, gen, args.max_batch, args.max_prompt, args.max_new_tokens)
            last_call = i == args.calls - 1 or time.perf_counter() - start > args.max_seconds
            if i % args.sample_every == 0 or last_call:
                rows.append(dict(call=i, rss_mib=round(resident_mib(), 2), fds=open_fds(), os_threads=os_threads(),
                                 py_threads=threading.active_count(), seconds=round(time.perf_counter() - start, 1)))
                writer.writerow(rows[-1])
                f.flush()
            if last_call:
                break
    calls = rows[-1]["call"] + 1
    warmup = min(args.warmup, calls // 2)
    after = [r for r in rows if r["call"] >= warmup]
    per_call_kib = slope([r["call"] for r in after], [r["rss_mib"] for r in after]) * 1024 if len(after) > 1 else 0.0
    first, last = after[0] if after else rows[0], rows[-1]
    print(f"| calls | seconds | RSS after warm-up ({warmup} calls) -> end (MiB) | RSS slope (KiB/call) | fds | "
          "OS threads |")
    print("|---|---|---|---|---|---|")
    print(f"| {calls} | {last['seconds']} | {first['rss_mib']} -> {last['rss_mib']} | {per_call_kib:.2f} | "
          f"{rows[0]['fds']} -> {last['fds']} | {rows[0]['os_threads']} -> {last['os_threads']} |")
    print(f"\n{kivi_line}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
