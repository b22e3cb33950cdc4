"""Tokens/s and acceptance of prompt-lookup and assisted decoding, vs plain greedy and transformers' own versions.

Prompts are input-grounded (rewrite / summarise a passage of benchmarks/data/public_domain_us_documents.txt given in
the chat prompt, a few hundred tokens). Providers, all greedy on the same model (default SmolLM2-135M-Instruct):

- ``greedy``: ``pydecode.generate`` plain greedy (the baseline every speedup is relative to)
- ``lookup`` / ``hf_lookup``: prompt lookup (``prompt_lookup_num_tokens``), pydecode / transformers
- ``assisted`` / ``hf_assisted``: assisted decoding with a self-speculative draft, the model's first
  ``--draft-layers`` layers with its own final norm and head (weights shared), a constant ``num_assistant_tokens``
  (transformers' ``assistant_confidence_threshold`` is set to 0 so that both draft the same number of tokens)

Every provider's tokens must equal plain greedy's (asserted). Each time is the best of ``--repeats`` interleaved runs
after a short warm-up; the median is reported too (on a shared machine it moves less). ``forwards/token`` counts the
main model's forward calls (prefill included) per new token. Writes ``benchmarks/results/speculative_<device>.csv``
and its plot (``.png``), and prints a markdown table headed by the machine, the versions and the command.
Run: ``OMP_NUM_THREADS=1 python benchmarks/bench_speculative.py [--device cpu|cuda] ...``
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from bench_generate import machine
from plot_results import plot_csv

import pydecode
from pydecode.models import load_model

HERE = Path(__file__).parent
TASKS = {
    "rewrite": "Rewrite the following passage in plain modern English, keeping every sentence:\n\n",
    "summarise": "Summarise the following passage, quoting its key phrases:\n\n",
}


def passages() -> list[str]:
    """The long paragraphs of the public-domain text (150 to 320 SmolLM2 tokens each)."""
    text = (HERE / "data" / "public_domain_us_documents.txt").read_text()
    return [p for p in text.split("\n\n") if len(p) > 600]


def chat_prompt(tokenizer, task: str, passage: str, device: str) -> dict:
    messages = [{"role": "user", "content": TASKS[task] + passage}]
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def self_draft(model, layers: int, num_tokens: int):
    """The model's first ``layers`` decoder layers with its own final norm and head, sharing the weights."""
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    with torch.device("meta"):
        draft = type(model)(config)
    inner, body = draft.model, model.model
    inner.embed_tokens, inner.norm, inner.rotary_emb = body.embed_tokens, body.norm, body.rotary_emb
    inner.layers = torch.nn.ModuleList(body.layers[:layers])
    draft.lm_head = model.lm_head
    draft.generation_config = copy.deepcopy(model.generation_config)
    draft.generation_config.update(num_assistant_tokens=num_tokens, num_assistant_tokens_schedule="constant",
                                   assistant_confidence_threshold=0.0)
    return draft.eval()


class ForwardCounter:
    """Counts the forward calls of a module."""

    def __init__(self, module):
        self.calls = 0
        module.register_forward_pre_hook(lambda *_: setattr(self, "calls", self.calls + 1))


def providers(model, draft, args) -> dict:
    """``{name: fn(inputs, max_new_tokens)}``."""
    lookup = dict(prompt_lookup_num_tokens=args.lookup_tokens)
    assisted = dict(assistant_model=draft, num_assistant_tokens=args.assistant_tokens)
    def ours(**kw):
        return lambda inputs, n: pydecode.generate(model, **inputs, max_new_tokens=n, do_sample=False,
                                                   return_dict_in_generate=True, **kw)

    def hf(**kw):
        return lambda inputs, n: model.generate(**inputs, max_new_tokens=n, do_sample=False, **kw)

    return {"greedy": ours(), "lookup": ours(**lookup), "hf_lookup": hf(**lookup),
            "assisted": ours(**assisted), "hf_assisted": hf(assistant_model=draft)}


def run_case(fns: dict, inputs: dict, new_tokens: int, counter: ForwardCounter, device: str,
             repeats: int) -> list[dict]:
    """A short warm-up, then ``repeats`` interleaved timed runs of each provider; one row per provider."""
    for fn in fns.values():
        fn(inputs, 4)
    seconds, outputs, forwards = {name: [] for name in fns}, {}, {}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device == "cuda":
                torch.cuda.synchronize()
            counter.calls, start = 0, time.perf_counter()
            outputs[name] = fn(inputs, new_tokens)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - start)
            forwards[name] = counter.calls
    prompt_length = inputs["input_ids"].shape[1]
    expected = outputs["greedy"].sequences
    rows = []
    for name, out in outputs.items():
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        assert torch.equal(sequences, expected), f"{name}: greedy tokens differ from plain greedy"
        new = sequences.shape[1] - prompt_length
        best, median = min(seconds[name]), statistics.median(seconds[name])
        rate = getattr(out, "acceptance_rate", None)
        accepted = getattr(out, "mean_accepted_tokens", None)
        rows.append(dict(provider=name, seconds=round(best, 3), new_tokens=new, tokens_per_s=round(new / best, 2),
                         median_tokens_per_s=round(new / median, 2),
                         forwards_per_token=round(forwards[name] / new, 3),
                         acceptance_rate="" if rate is None else round(rate, 3),
                         mean_accepted_tokens="" if accepted is None else round(accepted, 3)))
    greedy_rate = rows[0]["tokens_per_s"]
    for row in rows:
        row["speedup_vs_greedy"] = round(row["tokens_per_s"] / greedy_rate, 2)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--tasks", default="rewrite,summarise")
    parser.add_argument("--passage", type=int, default=0, help="index into the long paragraphs of the data file")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--lookup-tokens", type=int, default=10)
    parser.add_argument("--draft-layers", type=int, default=12)
    parser.add_argument("--assistant-tokens", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    args = parser.parse_args(argv)

    model, tokenizer = load_model(args.model)
    model.to(args.device)
    draft = self_draft(model, args.draft_layers, args.assistant_tokens)
    counter = ForwardCounter(model)
    fns = providers(model, draft, args)
    rows = []
    for task in args.tasks.split(","):
        inputs = chat_prompt(tokenizer, task, passages()[args.passage], args.device)
        for row in run_case(fns, inputs, args.max_new_tokens, counter, args.device, args.repeats):
            rows.append(dict(device=args.device, task=task, prompt_tokens=inputs["input_ids"].shape[1], **row))
        print(f"done: {task}", file=sys.stderr)

    out = Path(args.out_dir) / f"speculative_{args.device}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_csv(out)

    load = f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores" if args.device == "cpu" else ""
    print(f"Machine: {machine(args.device)}{load}; torch {torch.__version__}, transformers {transformers.__version__}")
    env = "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS", "PYDECODE_BACKEND") if k in os.environ)
    flags = " ".join(sys.argv[1:] if argv is None else argv)
    print(f"Command: {env}python benchmarks/bench_speculative.py {flags}")
    print(f"Draft: first {args.draft_layers} of {model.config.num_hidden_layers} layers, "
          f"{args.assistant_tokens} tokens per step; prompt lookup: {args.lookup_tokens} tokens. CSV: {out}\n")
    print("| task | prompt tokens | provider | tok/s | vs greedy | median tok/s | forwards/token | acceptance | "
          "accepted/step |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['prompt_tokens']} | {r['provider']} | {r['tokens_per_s']} | "
              f"{r['speedup_vs_greedy']:.2f}x | {r['median_tokens_per_s']} | {r['forwards_per_token']} | "
              f"{r['acceptance_rate']} | {r['mean_accepted_tokens']} |")


if __name__ == "__main__":
    main()
