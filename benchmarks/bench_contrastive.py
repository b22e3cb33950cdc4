"""Contrastive search and DoLa: pydecode vs the transformers 4.55.4 in-core implementations, same model, same tokens.

Decode tokens/s (prefill excluded: timed from the first streamed token to the last) on SmolLM2-135M-Instruct, batch 1,
random prompts of 256 and 2048 tokens, penalty_alpha 0.6 with top_k in {4, 8, 16}; then greedy and DoLa (low, high)
at each context, for DoLa's cost over greedy. transformers 4.55.4 runs in its own virtual environment
(``--tf4-python``) as a worker process of this script, on a copy of the same weights (``<model folder>-tf4``, written
by tests/fixtures/golden_v4/make_models.py --smollm2). The two providers take turns case by case (the worker waits
while pydecode runs and the other way round), so a load change on a shared machine hits both; each rate is the best
of ``--repeats`` turns (after one untimed warm-up turn), in wall-clock and in process CPU time (less sensitive to
other jobs), and the sequences of both must be equal. DoLa's "time vs greedy" is in CPU time.

    python benchmarks/bench_contrastive.py [--tf4-python /work/venv-tf4/bin/python] [--threads 1]
                                           [--contexts 256,2048] [--new-tokens 32] [--repeats 2]

Writes benchmarks/results/contrastive_cpu.csv and its plot (.png), and prints a markdown table headed by the
machine, the versions, the load average and the command.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Clock:
    """Streamer that stamps the wall-clock and the process CPU time of every put."""

    def __init__(self):
        self.wall, self.cpu = [], []

    def put(self, value):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def end(self):
        pass

    def tokens_per_s(self, new_tokens: int) -> tuple[float, float]:
        """Decode tokens per wall-clock second and per CPU second: from the first token (after the prefill; the
        prompt is put before it) to the last."""
        return (new_tokens - 1) / (self.wall[-1] - self.wall[1]), (new_tokens - 1) / (self.cpu[-1] - self.cpu[1])


def _timed(generate, ids, kwargs):
    """(sequence, (wall, CPU) decode tokens/s) of one ``generate(ids, streamer, kwargs)`` call."""
    import torch

    clock = _Clock()
    with torch.no_grad():
        out = generate(ids, clock, kwargs)
    return out[0].tolist(), clock.tokens_per_s(out.shape[1] - ids.shape[1])


def _cases(contexts: list[int], new_tokens: int) -> list[dict]:
    cases = []
    for context in contexts:
        for k in (4, 8, 16):
            cases.append({"name": f"contrastive k={k}", "context": context,
                          "kwargs": dict(penalty_alpha=0.6, top_k=k, max_new_tokens=new_tokens)})
        cases.append({"name": "greedy", "context": context, "kwargs": dict(max_new_tokens=new_tokens)})
        for layers in ("low", "high"):
            cases.append({"name": f"dola {layers}", "context": context,
                          "kwargs": dict(dola_layers=layers, repetition_penalty=1.2, max_new_tokens=new_tokens)})
    return cases


def _prompt(context: int, vocab: int):
    import torch

    return torch.randint(100, vocab - 100, (1, context), generator=torch.Generator().manual_seed(context))


def _tf4_generate(model):
    import torch

    def generate(ids, streamer, kwargs):
        kwargs = dict(kwargs, do_sample=False, pad_token_id=model.config.eos_token_id)
        if "penalty_alpha" in kwargs or "dola_layers" in kwargs:
            kwargs["trust_remote_code"] = False  # the in-core implementation, not the Hub's custom_generate
        return model.generate(ids, attention_mask=torch.ones_like(ids), streamer=streamer, **kwargs)

    return generate


def worker(spec_path: str) -> None:
    """Runs inside the transformers 4.55.4 environment: one case per index read from stdin, one JSON line back."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], torch_dtype=torch.float32).eval()
    generate = _tf4_generate(model)
    print(json.dumps({"transformers": transformers.__version__}), flush=True)
    for line in sys.stdin:
        case = spec["cases"][int(line)]
        seq, tps = _timed(generate, torch.tensor(case["input_ids"]), case["kwargs"])
        print(json.dumps({"sequence": seq, "tokens_per_s": tps}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tf4-python", default="/work/venv-tf4/bin/python")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--contexts", default="256,2048")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "contrastive_cpu.csv"))
    args = ap.parse_args()

    import torch
    import transformers

    import pydecode
    from pydecode.models import load_model, model_path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_generate import machine
    from plot_results import plot_csv

    torch.set_num_threads(args.threads)
    model, _ = load_model("smollm2")
    cases = _cases([int(c) for c in args.contexts.split(",")], args.new_tokens)
    for case in cases:
        case["input_ids"] = _prompt(case["context"], model.config.vocab_size).tolist()
    spec = ROOT / "build" / "bench_contrastive_spec.json"
    spec.parent.mkdir(exist_ok=True)
    tf4_model = model_path("smollm2") + "-tf4"
    spec.write_text(json.dumps({"model": tf4_model, "threads": args.threads, "cases": cases}))
    proc = subprocess.Popen([args.tf4_python, __file__, "--worker", str(spec)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    tf4_version = json.loads(proc.stdout.readline())["transformers"]

    def tf4(index: int) -> tuple[list[int], tuple[float, float]]:
        proc.stdin.write(f"{index}\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            sys.exit("the transformers 4.55.4 worker failed (its error is above)")
        result = json.loads(line)
        return result["sequence"], result["tokens_per_s"]

    def ours(ids, streamer, kwargs):
        return pydecode.generate(model, ids, attention_mask=torch.ones_like(ids), streamer=streamer, do_sample=False,
                                 pad_token_id=model.config.eos_token_id, **kwargs)

    tf4(0), _timed(ours, torch.tensor(cases[0]["input_ids"]), cases[0]["kwargs"])  # warm-up, not timed
    load_before = os.getloadavg()
    rows = []
    for index, case in enumerate(cases):
        ids = torch.tensor(case["input_ids"])
        runs = {"pydecode": [], "tf4": []}
        for _ in range(args.repeats):
            ref_seq, ref_tps = tf4(index)
            seq, tps = _timed(ours, ids, case["kwargs"])
            runs["tf4"].append(ref_tps)
            runs["pydecode"].append(tps)
        (wall, cpu), (ref_wall, ref_cpu) = (tuple(map(max, zip(*runs[n]))) for n in ("pydecode", "tf4"))
        rows.append({"method": case["name"], "context": case["context"],
                     "new_tokens": case["kwargs"]["max_new_tokens"], "pydecode_tok_s": round(wall, 2),
                     "tf4_tok_s": round(ref_wall, 2), "speedup": round(wall / ref_wall, 2),
                     "speedup_cpu_time": round(cpu / ref_cpu, 2), "same_tokens": seq == ref_seq,
                     "pydecode_cpu_tok_s": cpu})
        print(rows[-1], file=sys.stderr, flush=True)
    proc.stdin.close()
    proc.wait()
    load_after = os.getloadavg()
    greedy = {r["context"]: r["pydecode_cpu_tok_s"] for r in rows if r["method"] == "greedy"}
    for r in rows:  # DoLa's cost over greedy, in CPU time (both run in this process)
        cpu = r.pop("pydecode_cpu_tok_s")
        r["vs_greedy"] = round(greedy[r["context"]] / cpu, 2) if r["method"].startswith(("dola", "greedy")) else ""

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_csv(args.out)
    env = "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS",) if k in os.environ)
    print(f"machine: {machine('cpu')}; torch {torch.__version__}, transformers {transformers.__version__} vs "
          f"{tf4_version}; load average (1 min) {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"command: {env}python benchmarks/bench_contrastive.py {' '.join(sys.argv[1:])}\n")
    print("| method | context | new tokens | pydecode tok/s | transformers 4.55.4 tok/s | speedup | speedup (CPU time) "
          "| same tokens | time vs greedy |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = "yes" if r["same_tokens"] else "NO"
        print(f"| {r['method']} | {r['context']} | {r['new_tokens']} | {r['pydecode_tok_s']} | {r['tf4_tok_s']} | "
              f"{r['speedup']}x | {r['speedup_cpu_time']}x | {same} | {r['vs_greedy']} |")
    if not all(r["same_tokens"] for r in rows):
        sys.exit("pydecode and transformers 4.55.4 disagree on some sequences")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
