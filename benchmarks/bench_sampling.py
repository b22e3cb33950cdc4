"""Per-step sampling cost: pydecode's backends vs the transformers processor chain (and FlashInfer on a GPU).

Sweeps batch x vocab x mode on realistic logits: rows captured from SmolLM2-135M on a paragraph, resampled to each
vocabulary size (values drawn from a real row, jittered by 1e-3 to break ties). Providers, side by side in one run:

- ``pydecode-<backend>``: every backend usable on the device (penalties op + fused sampler)
- ``transformers``: RepetitionPenalty (penalty modes) + Temperature + TopK + TopP (+ MinP) warpers, softmax,
  ``torch.multinomial`` — what ``model.generate`` runs per step
- ``flashinfer`` (GPU, when ``flashinfer-python`` imports): ``top_k_top_p_sampling_from_logits``
- ``copy``: a device-to-device copy of the logits, the memory-bandwidth bound

Writes ``benchmarks/results/sampling_<device>.csv``, a plot next to it (matplotlib, if installed) and prints a
markdown table headed by the machine, versions and command.
Run: ``python benchmarks/bench_sampling.py [--device cuda] [--batch-sizes 1,8,64,256] [--vocabs 32000,128256,262144]``
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from bench_generate import machine
from plot_results import plot_csv
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import pydecode
from pydecode.ops import apply_penalties_, top_k_top_p_sample
from pydecode.ops.backends import active_backends

MODES = {
    "greedy": dict(temperature=0.0),
    "top_k": dict(temperature=0.8, top_k=50),
    "top_p": dict(temperature=0.8, top_p=0.9),
    "top_k_top_p_min_p": dict(temperature=0.8, top_k=50, top_p=0.9, min_p=0.05),
    "penalties": dict(temperature=0.8, top_k=50, top_p=0.9, repetition=1.2, frequency=0.5, presence=0.3),
    # the drawn token's raw and processed logprobs too (pydecode: from the sampling kernel itself)
    "top_k_top_p_logprobs": dict(temperature=0.8, top_k=50, top_p=0.9, logprobs=True),
}
PARAGRAPH = ("The river bent twice before it reached the town, and in the spring it carried the snow of three "
             "valleys past the mill, the church and the long wooden bridge where the children fished. ")


def captured_rows(device: str) -> tuple[torch.Tensor, str]:
    """Real next-token logit rows of SmolLM2 (or, without it, synthetic Gaussian rows), and where they came from."""
    try:
        from pydecode.models import load_model

        model, tokenizer = load_model("smollm2")
        ids = tokenizer(PARAGRAPH * 2, return_tensors="pt").input_ids
        with torch.no_grad():
            return model(ids).logits[0].float(), "SmolLM2-135M-Instruct logits"
    except Exception as error:  # noqa: BLE001 - the benchmark still runs without the real model
        print(f"(real model unavailable: {error}; using Gaussian logits)", file=sys.stderr)
        return torch.randn(64, 49152) * 3, "synthetic Gaussian logits"


def make_logits(rows: torch.Tensor, batch: int, vocab: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch * 7 + vocab)
    picks = rows[torch.randint(0, rows.shape[0], (batch,), generator=g)]
    cols = torch.randint(0, rows.shape[1], (batch, vocab), generator=g)
    out = picks.gather(1, cols) + 1e-3 * torch.randn(batch, vocab, generator=g)
    return out.to(device)


def pydecode_step(backend: str, mode: dict, logits: torch.Tensor, counts, prompt_mask, seeds):
    def step():
        x = logits.clone()
        if "repetition" in mode:
            apply_penalties_(x, counts, prompt_mask, mode["repetition"], mode["frequency"], mode["presence"],
                             backend=backend)
        return top_k_top_p_sample(x, mode["temperature"], mode.get("top_k", 0), mode.get("top_p", 1.0),
                                  mode.get("min_p", 0.0), seeds=seeds, step=3, backend=backend,
                                  return_logprobs=mode.get("logprobs", False))
    return step


def transformers_step(mode: dict, logits: torch.Tensor, history: torch.Tensor):
    chain = [RepetitionPenaltyLogitsProcessor(mode["repetition"])] if "repetition" in mode else []
    if mode["temperature"] > 0:
        chain.append(TemperatureLogitsWarper(mode["temperature"]))
        chain += [TopKLogitsWarper(mode["top_k"])] if "top_k" in mode else []
        chain += [TopPLogitsWarper(mode["top_p"])] if "top_p" in mode else []
        chain += [MinPLogitsWarper(mode["min_p"])] if "min_p" in mode else []
    processors = LogitsProcessorList(chain)

    def step():
        scores = processors(history, logits.clone())
        if mode["temperature"] == 0:
            return scores.argmax(-1)
        tokens = torch.multinomial(scores.softmax(-1), 1)
        if mode.get("logprobs"):
            return tokens, logits.log_softmax(-1).gather(1, tokens), scores.log_softmax(-1).gather(1, tokens)
        return tokens.squeeze(1)
    return step


def flashinfer_step(mode: dict, logits: torch.Tensor):
    if logits.device.type != "cuda" or mode["temperature"] == 0 or {"repetition", "min_p", "logprobs"} & set(mode):
        return None
    try:
        import flashinfer.sampling as fis
    except ImportError:
        return None
    batch = logits.shape[0]
    top_k = torch.full((batch,), mode.get("top_k", logits.shape[1]), dtype=torch.int32, device=logits.device)
    top_p = torch.full((batch,), mode.get("top_p", 1.0), device=logits.device)

    def step():
        return fis.top_k_top_p_sampling_from_logits(logits / mode["temperature"], top_k, top_p)

    try:
        step()  # its first call compiles the kernel (JIT); a failure leaves FlashInfer out of the table
    except Exception as error:  # noqa: BLE001
        print(f"(flashinfer failed: {type(error).__name__}: {error})", file=sys.stderr)
        return None
    return step


def median_ms(fn, device: str, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default=None, help="default: 1,8,64,256 on GPU, 1,8,64 on CPU")
    parser.add_argument("--vocabs", default=None, help="default: 32000,128256,262144 on GPU, 32000,128256 on CPU")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--skip-reference", action="store_true", help="leave out the slow pure-PyTorch backend")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    batches = [int(b) for b in (args.batch_sizes or ("1,8,64,256" if gpu else "1,8,64")).split(",")]
    vocabs = [int(v) for v in (args.vocabs or ("32000,128256,262144" if gpu else "32000,128256")).split(",")]
    repeats = args.repeats or (50 if gpu else 5)
    backends = [b for b in active_backends(args.device) if not (args.skip_reference and b == "torch")]
    rows, source = captured_rows(args.device)

    results = []
    for vocab in vocabs:
        for batch in batches:
            logits = make_logits(rows, batch, vocab, args.device)
            history = torch.randint(0, vocab, (batch, 64), device=args.device)
            counts = torch.zeros(batch, vocab, dtype=torch.int32, device=args.device)
            counts.scatter_add_(1, history[:, 32:], torch.ones_like(history[:, 32:], dtype=torch.int32))
            prompt_mask = torch.zeros(batch, vocab, dtype=torch.bool, device=args.device)
            prompt_mask.scatter_(1, history[:, :32], True)
            seeds = torch.arange(batch, device=args.device)
            for name in args.modes.split(","):
                mode = MODES[name]
                providers = {f"pydecode-{b}": pydecode_step(b, mode, logits, counts, prompt_mask, seeds)
                             for b in backends}
                providers["transformers"] = transformers_step(mode, logits, history)
                providers["flashinfer"] = flashinfer_step(mode, logits)
                providers["copy"] = logits.clone
                for provider, fn in providers.items():
                    if fn is None:
                        continue
                    ms = median_ms(fn, args.device, repeats)
                    gbps = logits.numel() * 4 / (ms * 1e-3) / 1e9
                    results.append(dict(mode=name, batch=batch, vocab=vocab, provider=provider, ms=round(ms, 4),
                                        logits_gb_per_s=round(gbps, 2)))
                    print(f"{name:18s} B={batch:<4d} V={vocab:<7d} {provider:18s} {ms:9.3f} ms", file=sys.stderr)
    write(results, args, source, argv)



def save_and_describe(results: list[dict], args, source: str, argv, name: str) -> Path:
    """Write ``results`` to ``<out_dir>/<name>_<device>.csv``, plot it, and print the machine, the versions, the
    inputs and the command that made them (above the table the caller prints). Returns the CSV's path."""
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}_{args.device}.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    plot_csv(path)
    command = f"python benchmarks/bench_{name}.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"\nMachine: {machine(args.device)}; torch {torch.__version__}, transformers {transformers.__version__}, "
          f"pydecode {pydecode.__version__}; inputs: {source}\nCommand: `{command.strip()}`\n")
    return path


def write(results: list[dict], args, source: str, argv) -> None:
    path = save_and_describe(results, args, source, argv, "sampling")
    print("| mode | batch | vocab | provider | ms / step | x transformers | logits GB/s |")
    print("|---|---|---|---|---|---|---|")
    base = {(r["mode"], r["batch"], r["vocab"]): r["ms"] for r in results if r["provider"] == "transformers"}
    for r in results:
        speedup = base[(r["mode"], r["batch"], r["vocab"])] / r["ms"]
        print(f"| {r['mode']} | {r['batch']} | {r['vocab']} | {r['provider']} | {r['ms']:.3f} | {speedup:.1f}x | "
              f"{r['logits_gb_per_s']:.1f} |")
    print(f"\nCSV: {path}")


if __name__ == "__main__":
    main()
