"""A decoding step's linear layers on the CPU: pydecode's ``decode_linear`` against ``torch.nn.functional.linear``.

One "step" is every linear layer of a model at its real shapes (SmolLM2-135M: per layer q, k, v, o, gate, up, down;
then the head), float32 and bfloat16, with ``rows`` input rows (the batch decoded at once). Both providers run in turn
``--repeats`` times (interleaved) after a warm-up; the median counts. ``weights GB/s`` is the weight bytes read per
step over its time (the memory-bound limit of this machine is its read bandwidth). Writes
``benchmarks/results/decode_linear_cpu.csv`` and its plot, and prints a markdown table.
Run: ``python benchmarks/bench_decode_linear.py [--rows 1,2,4,8,16,32,64,128] [--dtypes fp32,bf16] [--threads N]``
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_sampling import save_and_describe

from pydecode.ops.linear import decode_linear

# SmolLM2-135M: hidden 576, 9 query heads and 3 key/value heads of 64, MLP 1536, 30 layers, vocabulary 49152
LAYER_SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]  # (N, K)
LAYERS, HEAD = 30, (49152, 576)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def weights(dtype: torch.dtype, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The step's (weight, bias) pairs: separate tensors per layer, as in the model (no cache reuse across
    layers)."""
    g = torch.Generator().manual_seed(seed)
    shapes = LAYER_SHAPES * LAYERS + [HEAD]
    return [((torch.randn(n, k, generator=g) * k ** -0.5).to(dtype), None) for n, k in shapes]


def step_time(provider, rows: int, layers, repeats: int) -> float:
    """Median seconds of one step (every layer once) for ``rows`` input rows."""
    inputs = {k: torch.randn(rows, k).to(layers[0][0].dtype) for k in {w.shape[1] for w, _ in layers}}

    def step():
        for weight, bias in layers:
            provider(inputs[weight.shape[1]], weight, bias)

    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


PROVIDERS = {"torch F.linear": F.linear, "pydecode decode_linear": lambda x, w, b: decode_linear(x, w, b,
                                                                                                 backend="cpp")}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1,2,4,8,16,32,64,128")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    args.device = "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for dtype in args.dtypes.split(","):
        layers = weights(DTYPES[dtype])
        gigabytes = sum(w.numel() * w.element_size() for w, _ in layers) / 1e9
        for rows in map(int, args.rows.split(",")):
            runs = {name: [] for name in PROVIDERS}
            for _ in range(3):  # interleaved rounds: a change in load hits both providers alike
                for name, provider in PROVIDERS.items():
                    runs[name].append(step_time(provider, rows, layers, args.repeats))
            for name, times in runs.items():
                seconds = statistics.median(times)
                results.append(dict(dtype=dtype, rows=rows, provider=name, ms=round(1000 * seconds, 2),
                                    weights_gb_per_s=round(gigabytes / seconds, 1), threads=torch.get_num_threads()))
    save_and_describe(results, args, "SmolLM2-135M linear shapes (0.54 GB of float32 weights per step)", argv,
                      "decode_linear")
    print(f"bfloat16 dot products (AVX-512 BF16): {torch.ops.pydecode.bf16_dot_products()}\n")
    print("| dtype | rows | provider | ms / step | weights GB/s | x torch |")
    print("|---|---|---|---|---|---|")
    base = {(r["dtype"], r["rows"]): r["ms"] for r in results if r["provider"] == "torch F.linear"}
    for r in results:
        print(f"| {r['dtype']} | {r['rows']} | {r['provider']} | {r['ms']} | {r['weights_gb_per_s']} | "
              f"{base[(r['dtype'], r['rows'])] / r['ms']:.2f}x |")


if __name__ == "__main__":
    main()
