"""Contrastive search and DoLa: pydecode vs the transformers 4.55.4 in-core implementations, same model, same tokens.

Decode tokens/s (prefill excluded: timed from the first streamed token to the last) on SmolLM2-135M-Instruct, batch 1,
random prompts of 256 and 2048 tokens, penalty_alpha 0.6 with top_k in {4, 8, 16}; then DoLa's cost over greedy.
transformers 4.55.4 runs in its own virtual environment (``--tf4-python``) as a subprocess of this script, on a copy
of the same weights (``<model folder>-tf4``, written by tests/fixtures/golden_v4/make_models.py --smollm2); the
sequences of both must be equal.

    python benchmarks/bench_contrastive.py [--tf4-python /work/venv-tf4/bin/python] [--threads 2] [--quick]

Writes benchmarks/results/contrastive_cpu.csv and prints a markdown table.
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Clock:
    """Streamer that stamps the time of every put after the prompt's."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass

    def tokens_per_s(self, new_tokens: int) -> float:
        decode = self.times[-1] - self.times[1]  # times[0]: the prompt, times[1]: the first token (after prefill)
        return (new_tokens - 1) / decode


def _timed(generate, model, ids, kwargs):
    import torch

    clock = _Clock()
    with torch.no_grad():
        out = generate(model, ids, clock, kwargs)
    new = out.shape[1] - ids.shape[1]
    return out[0].tolist(), clock.tokens_per_s(new)


def _cases(quick: bool):
    contexts = {256: 24, 2048: 12} if not quick else {256: 8}
    cases = []
    for context, new in contexts.items():
        for k in (4, 8, 16):
            cases.append({"name": f"contrastive k={k}", "context": context, "kwargs": dict(
                penalty_alpha=0.6, top_k=k, max_new_tokens=new)})
    for context, new in list(contexts.items())[:1]:
        cases.append({"name": "greedy", "context": context, "kwargs": dict(max_new_tokens=new)})
        for layers in ("low", "high"):
            cases.append({"name": f"dola {layers}", "context": context, "kwargs": dict(
                dola_layers=layers, repetition_penalty=1.2, max_new_tokens=new)})
    return cases


def _prompt(context: int, vocab: int):
    import torch

    return torch.randint(100, vocab - 100, (1, context), generator=torch.Generator().manual_seed(context))


def worker(spec_path: str) -> None:
    """Runs inside the transformers 4.55.4 environment: the same cases with ``model.generate``."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], torch_dtype=torch.float32).eval()
    results = []
    for case in spec["cases"]:
        ids = torch.tensor(case["input_ids"])
        kwargs = dict(case["kwargs"], do_sample=False, pad_token_id=model.config.eos_token_id)
        if "penalty_alpha" in kwargs or "dola_layers" in kwargs:
            kwargs["trust_remote_code"] = False
        seq, tps = _timed(lambda m, i, s, kw: m.generate(i, attention_mask=torch.ones_like(i), streamer=s, **kw),
                          model, ids, kwargs)
        results.append({"sequence": seq, "tokens_per_s": tps})
    print(json.dumps({"transformers": transformers.__version__, "results": results}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tf4-python", default="/work/venv-tf4/bin/python")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="256-token context only, 8 new tokens")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "contrastive_cpu.csv"))
    args = ap.parse_args()

    import torch
    import transformers

    import pydecode
    from pydecode.models import load_model, model_path

    torch.set_num_threads(args.threads)
    model, _ = load_model("smollm2")
    tf4_model = Path(model_path("smollm2") + "-tf4")
    cases = _cases(args.quick)
    vocab = model.config.vocab_size
    for case in cases:
        case["input_ids"] = _prompt(case["context"], vocab).tolist()
    spec = ROOT / "build" / "bench_contrastive_spec.json"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text(json.dumps({"model": str(tf4_model), "threads": args.threads, "cases": cases}))
    proc = subprocess.run([args.tf4_python, __file__, "--worker", str(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"transformers 4.55.4 worker failed:\n{proc.stderr[-4000:]}")
    reference = json.loads(proc.stdout.strip().splitlines()[-1])

    def ours(m, ids, streamer, kwargs):
        return pydecode.generate(m, ids, attention_mask=torch.ones_like(ids), streamer=streamer, do_sample=False,
                                 pad_token_id=m.config.eos_token_id, **kwargs)

    rows = []
    for case, ref in zip(cases, reference["results"]):
        seq, tps = _timed(ours, model, torch.tensor(case["input_ids"]), case["kwargs"])
        same = seq == ref["sequence"]
        rows.append({"method": case["name"], "context": case["context"],
                     "new_tokens": case["kwargs"]["max_new_tokens"], "pydecode_tok_s": round(tps, 2),
                     "tf4_tok_s": round(ref["tokens_per_s"], 2), "speedup": round(tps / ref["tokens_per_s"], 2),
                     "same_tokens": same})
        print(rows[-1], flush=True)
    greedy = next(r["pydecode_tok_s"] for r in rows if r["method"] == "greedy")
    for r in rows:
        r["vs_greedy"] = round(greedy / r["pydecode_tok_s"], 2) if r["method"].startswith(("dola", "greedy")) else ""

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    machine = (f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
               f"transformers {transformers.__version__} vs {reference['transformers']}")
    print(f"\n{machine}\ncommand: python benchmarks/bench_contrastive.py {' '.join(sys.argv[1:])}\n")
    print("| method | context | new tokens | pydecode tok/s | transformers 4.55.4 tok/s | speedup | same tokens |"
          " time vs greedy |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['context']} | {r['new_tokens']} | {r['pydecode_tok_s']} | {r['tf4_tok_s']} | "
              f"{r['speedup']}x | {'yes' if r['same_tokens'] else 'NO'} | {r['vs_greedy']} |")
    if not all(r["same_tokens"] for r in rows):
        sys.exit("pydecode and transformers 4.55.4 disagree on some sequences")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
