"""Per-step cost of ``pydecode.Sampler`` on a continuous-batching trace vs transformers' processor chains (and
vLLM's sampler where it imports).

The trace: ``batch`` requests of mixed parameters (greedy; temperature + top-k; top-p; min-p with frequency /
presence penalties; top-k + top-p with a repetition penalty; logit bias) run for ``--steps`` steps; every step about
an eighth of them finish and new requests of other parameters join in their slots, and the rows are shuffled.
Each step's logits are the same for every provider. Providers:

- ``pydecode-sampler``: ``Sampler.sample`` + ``Sampler.append`` (penalty counts, positions, stop state)
- ``transformers``: what transformers runs for such a batch: one ``LogitsProcessorList`` per parameter set over its
  rows (RepetitionPenalty, SequenceBias, Temperature, TopK, TopP, MinP; it has no frequency / presence penalty),
  softmax + ``torch.multinomial`` (argmax for greedy rows), and the history tensor the processors read, extended
- ``vllm``: vLLM's own ``vllm.v1.sample.sampler.Sampler`` (``Sampler.forward`` only; unseeded requests) on the same
  trace and logits, run by ``bench_sampler_vllm.py`` in vLLM's environment (``$PYDECODE_VLLM_VENV``, default
  ``~/.cache/pydecode/vllm-0.32.0``, made by ``tests/integrations/setup_vllm.sh``); left out, with the reason
  printed, where that environment is missing or fails

Writes ``benchmarks/results/sampler_<device>.csv``, a plot next to it (matplotlib, if installed) and prints a
markdown table headed by the machine, versions and command. Run:
``python benchmarks/bench_sampler.py [--batch-sizes 1,8,64,256] [--vocabs 49152,128256] [--steps 6]``
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_sampling import captured_rows, make_logits, save_and_describe
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from pydecode import Sampler, SamplingParams

PARAMETER_MIX = [
    SamplingParams(temperature=0.0),
    SamplingParams(temperature=0.8, top_k=50),
    SamplingParams(temperature=0.7, top_p=0.9),
    SamplingParams(temperature=1.0, min_p=0.05, frequency_penalty=0.5, presence_penalty=0.3),
    SamplingParams(temperature=0.8, top_k=40, top_p=0.95, repetition_penalty=1.2),
    SamplingParams(temperature=0.9, top_k=100, logit_bias={11: 5.0, 12: -100.0}),
]
PROMPT_LEN = 32


def trace(batch: int, steps: int, seed: int):
    """``steps + 1`` steps of ``(row order as slots, {slot: parameter kind} joining before it, slots leaving
    before it)``; the first step is everyone joining."""
    rng = random.Random(seed)
    events = []
    for step in range(steps + 1):
        leaving = [] if step == 0 else rng.sample(range(batch), max(batch // 8, 1 if batch > 1 else 0))
        joining = {slot: rng.randrange(len(PARAMETER_MIX)) for slot in (range(batch) if step == 0 else leaving)}
        order = list(range(batch))
        rng.shuffle(order)
        events.append((order, joining, leaving))
    return events


def transformers_chain(p: SamplingParams) -> LogitsProcessorList:
    chain = []
    if p.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(p.repetition_penalty))
    if p.sequence_bias:
        chain.append(SequenceBiasLogitsProcessor([[list(ids), bias] for ids, bias in p.sequence_bias]))
    if p.sampling:
        chain.append(TemperatureLogitsWarper(p.temperature))
        chain += [TopKLogitsWarper(p.top_k)] if p.top_k else []
        chain += [TopPLogitsWarper(p.top_p)] if p.top_p < 1.0 else []
        chain += [MinPLogitsWarper(p.min_p)] if p.min_p else []
    return LogitsProcessorList(chain)


class TransformersEngine:
    """Per-request parameter sets run as transformers would: one processor chain per set over its rows."""

    def __init__(self, batch: int, vocab: int, device):
        self.history = torch.randint(0, vocab, (batch, PROMPT_LEN), device=device)
        self.kind = [0] * batch
        self.chains = [transformers_chain(p) for p in PARAMETER_MIX]

    def join(self, slot: int, kind: int, prompt: torch.Tensor) -> None:
        """A new request in ``slot``: its history row is its prompt, repeated to the batch's (one-length) width."""
        self.kind[slot] = kind
        self.history[slot] = prompt.repeat(self.history.shape[1] // prompt.shape[0] + 1)[: self.history.shape[1]]

    def step(self, logits: torch.Tensor, order: list[int]) -> torch.Tensor:
        tokens = torch.empty(len(order), dtype=torch.long, device=logits.device)
        for kind, chain in enumerate(self.chains):
            rows = [i for i, slot in enumerate(order) if self.kind[slot] == kind]
            if not rows:
                continue
            index = torch.tensor(rows, device=logits.device)
            slots = torch.tensor([order[i] for i in rows], device=logits.device)
            scores = chain(self.history[slots], logits[index])
            if PARAMETER_MIX[kind].sampling:
                tokens[index] = torch.multinomial(scores.softmax(-1), 1).squeeze(1)
            else:
                tokens[index] = scores.argmax(-1)
        new = torch.empty(self.history.shape[0], 1, dtype=torch.long, device=logits.device)
        new[torch.tensor(order, device=logits.device), 0] = tokens
        self.history = torch.cat([self.history, new], 1)
        return tokens


VLLM_PYTHON = Path(os.environ.get("PYDECODE_VLLM_VENV", Path.home() / ".cache/pydecode/vllm-0.32.0")) / "bin/python"


def vllm_rows(rows: torch.Tensor, args) -> list[dict]:
    """The ``vllm`` provider's result rows, measured by ``bench_sampler_vllm.py`` in vLLM's environment (same
    threads as here), or none (the reason printed) where it is missing or fails."""
    if args.device != "cpu" or not VLLM_PYTHON.exists():
        reason = f"no vLLM environment at {VLLM_PYTHON}" if args.device == "cpu" else "CPU only here"
        print(f"(vllm left out: {reason})", file=sys.stderr)
        return []
    here = Path(__file__).parent
    threads = torch.get_num_threads()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TRITON_INTERPRET")}
    env.update(PYTHONPATH=f"{here.parent}{os.pathsep}{here}", OMP_NUM_THREADS=str(threads),
               VLLM_CPU_OMP_THREADS_BIND="nobind")
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(rows, f"{tmp}/rows.pt")
        run = subprocess.run([str(VLLM_PYTHON), str(here / "bench_sampler_vllm.py"), f"{tmp}/rows.pt",
                              f"{tmp}/out.json", "--batch-sizes", args.batch_sizes, "--vocabs", args.vocabs,
                              "--steps", str(args.steps), "--threads", str(threads)],
                             env=env, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            print(f"(vllm left out: its run failed)\n{run.stderr[-2000:]}", file=sys.stderr)
            return []
        return json.loads(Path(f"{tmp}/out.json").read_text())


def run_case(batch: int, vocab: int, steps: int, rows: torch.Tensor, device, backend: str) -> dict[str, list]:
    events = trace(batch, steps, seed=batch + vocab)
    prompts = torch.randint(0, vocab, (batch, PROMPT_LEN), generator=torch.Generator().manual_seed(batch))
    sampler = Sampler(batch, vocab, device, backend=backend)
    engine = TransformersEngine(batch, vocab, device)
    times = {"pydecode-sampler": [], "transformers": []}
    for step, (order, joining, leaving) in enumerate(events):
        for slot in leaving:
            sampler.remove(slot)
        for slot, kind in joining.items():
            params = PARAMETER_MIX[kind]
            params = SamplingParams(**{**_fields(params), "seed": step * batch + slot})
            sampler.add_request(slot, params, prompts[slot])
            engine.join(slot, kind, prompts[slot].to(device))
        logits = make_logits(rows, batch, vocab, device)
        t0 = time.perf_counter()
        tokens = sampler.sample(logits, order).token_ids
        sampler.append(order, tokens)
        t1 = time.perf_counter()
        engine.step(logits, order)
        t2 = time.perf_counter()
        if step:  # the first step warms both up
            times["pydecode-sampler"].append((t1 - t0) * 1e3)
            times["transformers"].append((t2 - t1) * 1e3)
    return times


def _fields(params: SamplingParams) -> dict:
    return {name: getattr(params, name) for name in params.__dataclass_fields__}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="1,8,64,256")
    parser.add_argument("--vocabs", default="49152,128256")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per case (after one warm-up step)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    rows, source = captured_rows(args.device)
    results = []
    for vocab in [int(v) for v in args.vocabs.split(",")]:
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            times = run_case(batch, vocab, args.steps, rows, args.device, args.backend)
            for provider, values in times.items():
                ms = statistics.median(values)
                results.append(dict(batch=batch, vocab=vocab, provider=provider, ms=round(ms, 4)))
                print(f"B={batch:<4d} V={vocab:<7d} {provider:18s} {ms:9.3f} ms", file=sys.stderr)
    results += vllm_rows(rows, args)
    write(results, args, source, argv)


def write(results: list[dict], args, source: str, argv) -> None:
    path = save_and_describe(results, args, source, argv, "sampler")
    print("| vocab | batch | pydecode Sampler ms/step | transformers chains ms/step | vLLM Sampler ms/step | "
          "x transformers | x vLLM |")
    print("|---|---|---|---|---|---|---|")
    by_case = {}
    for r in results:
        by_case.setdefault((r["vocab"], r["batch"]), {})[r["provider"]] = r["ms"]
    for (vocab, batch), ms in by_case.items():
        ours, vllm = ms["pydecode-sampler"], ms.get("vllm")
        print(f"| {vocab} | {batch} | {ours:.3f} | {ms['transformers']:.3f} | "
              f"{'-' if vllm is None else f'{vllm:.3f}'} | {ms['transformers'] / ours:.1f}x | "
              f"{'-' if vllm is None else f'{vllm / ours:.1f}x'} |")
    print(f"\nCSV: {path}")


if __name__ == "__main__":
    main()
