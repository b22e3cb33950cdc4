"""End-to-end greedy tokens/s: transformers (eager; static cache + ``compile_config``), pydecode (eager;
``compile=True`` when the keyword exists), vLLM's CPU engine (from its side venv, in a subprocess) and llama.cpp (when
``llama_cpp`` imports), on SmolLM2-135M-Instruct in float32 and bfloat16, batch 1 and 16.

Every system decodes the same ``--prompt`` -token prompts for ``--new-tokens`` tokens (eos ignored). The in-process
systems run in turn (interleaved) ``--repeats`` times after a first call whose extra time over the median is reported
as the compile time (vLLM: engine start plus its warm-up call). ``agree`` is the share of generated tokens equal to
transformers eager's in the same dtype. Writes ``benchmarks/results/e2e_<device>.csv`` (after every case) and its plot,
and prints a markdown table. On CUDA (``--device cuda``, default model ``llama-1b-random``) the compiled rows use
CUDA graphs (``mode="reduce-overhead"``) and vLLM / llama.cpp are skipped.
Run: ``python benchmarks/bench_e2e.py [--device cpu|cuda] [--batches 1,16] [--dtypes fp32,bf16]``
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_generate import prompts
from bench_sampling import save_and_describe
from transformers import CompileConfig

import pydecode
from pydecode.models import load_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
VLLM_PYTHON = Path.home() / ".cache/pydecode/vllm-0.32.0/bin/python"
SMOLLM2_DIR = Path.home() / ".cache/pydecode/smollm2-135m-instruct"


def greedy_config(model, device: str, new_tokens: int, compiled: bool):
    """The model's generation config, greedy, ``new_tokens`` new tokens, eos ignored; with ``compiled``,
    transformers' static cache and compile config (compiling on CPU too)."""
    config = copy.deepcopy(model.generation_config)
    config.do_sample, config.eos_token_id, config.max_new_tokens = False, None, new_tokens
    config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else 0
    if compiled:
        config.cache_implementation = "static"
        config.compile_config = CompileConfig(mode="reduce-overhead" if device == "cuda" else "default")
        config.compile_config._compile_all_devices = True
    return config


def compile_keyword(model, inputs, device: str):
    """The ``compile=`` value for pydecode, or None with the reason printed when ``generate`` does not take it (a
    one-token call: the prompt's forward only)."""
    keyword = {"mode": "reduce-overhead"} if device == "cuda" else True
    try:
        pydecode.generate(model, **inputs, max_new_tokens=1, compile=keyword)
    except (TypeError, ValueError) as error:
        if "compile" not in str(error):
            raise
        print(f"pydecode compiled: skipped (generate does not take compile= yet: {error})", file=sys.stderr)
        return None
    return keyword


def in_process_systems(model, inputs, new_tokens: int, device: str, skip: str) -> dict:
    eager, static = greedy_config(model, device, new_tokens, False), greedy_config(model, device, new_tokens, True)
    systems = {
        "transformers eager": lambda: model.generate(**inputs, generation_config=eager),
        "transformers compiled": lambda: model.generate(**inputs, generation_config=static),
        "pydecode eager": lambda: pydecode.generate(model, **inputs, generation_config=eager),
    }
    keyword = None if "compiled" in skip else compile_keyword(model, inputs, device)
    if keyword is not None:
        systems["pydecode compiled"] = lambda: pydecode.generate(model, **inputs, generation_config=eager,
                                                                 compile=keyword)
    if "compiled" in skip:
        print("compiled systems: skipped (--skip compiled)", file=sys.stderr)
        del systems["transformers compiled"]
    return systems


def time_interleaved(systems: dict, device: str, repeats: int) -> dict:
    """``{name: (first call seconds, [seconds of each run], generated ids)}``, the systems run in turn."""
    def call(fn):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out

    first = {name: call(fn) for name, fn in systems.items()}
    runs = {name: [] for name in systems}
    for _ in range(repeats):
        for name, fn in systems.items():
            runs[name].append(call(fn)[0])
    return {name: (first[name][0], runs[name], first[name][1]) for name in systems}


def vllm_run(ids: torch.Tensor, dtype: str, new_tokens: int, repeats: int):
    """vLLM's CPU engine in its venv: ``(startup seconds, [run seconds], ids)``, or None with the reason printed."""
    if not VLLM_PYTHON.exists():
        print(f"vLLM: skipped ({VLLM_PYTHON} missing; tests/integrations/setup_vllm.sh makes it)", file=sys.stderr)
        return None
    job = dict(model=str(SMOLLM2_DIR), dtype={"fp32": "float32", "bf16": "bfloat16"}[dtype],
               prompts=ids.tolist(), max_tokens=new_tokens, repeats=repeats)
    worker = Path(__file__).with_name("e2e_vllm_worker.py")
    done = subprocess.run([str(VLLM_PYTHON), str(worker), json.dumps(job)], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"vLLM: failed ({done.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["startup_s"], result["seconds"], torch.tensor(result["tokens"])


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama.cpp: skipped (llama_cpp does not import; optional, never installed by pydecode)",
              file=sys.stderr)
        return False
    print("llama.cpp: llama_cpp imports, but no GGUF run is wired here yet", file=sys.stderr)
    return False


def rows_for(results: dict, reference: torch.Tensor, meta: dict) -> list[dict]:
    rows = []
    for name, (first, runs, generated) in results.items():
        median = statistics.median(runs)
        tokens = generated.numel()
        agree = (generated == reference).float().mean().item() if generated.shape == reference.shape else ""
        rows.append(dict(**meta, system=name, repeats=len(runs), tokens_per_s=round(tokens / median, 1),
                         tokens_per_s_min=round(tokens / max(runs), 1), tokens_per_s_max=round(tokens / min(runs), 1),
                         compile_s=round(max(0.0, first - median), 1), agree=round(agree, 3) if agree != "" else ""))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default=None, help="default: smollm2 on CPU, llama-1b-random on CUDA")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--prompt", type=int, default=30)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma list of systems to leave out: compiled, vllm, llama.cpp")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    args.model = args.model or ("llama-1b-random" if args.device == "cuda" else "smollm2")
    external = args.device == "cpu" and args.model == "smollm2"
    rows = []
    for dtype in args.dtypes.split(","):
        model, tokenizer = load_model(args.model)
        model.to(args.device, DTYPES[dtype]).eval()
        for batch in map(int, args.batches.split(",")):
            inputs = prompts(tokenizer, batch, args.prompt, args.device)
            systems = in_process_systems(model, inputs, args.new_tokens, args.device, args.skip)
            results = {name: (first, runs, out[:, args.prompt:].cpu()) for name, (first, runs, out) in
                       time_interleaved(systems, args.device, args.repeats).items()}
            if external and "vllm" not in args.skip:
                vllm = vllm_run(inputs["input_ids"].cpu(), dtype, args.new_tokens, args.repeats)
                if vllm is not None:
                    results["vLLM CPU"] = vllm
            if external and "llama.cpp" not in args.skip:
                llama_cpp_available()
            meta = dict(device=args.device, model=args.model, dtype=dtype, batch=batch)
            rows += rows_for(results, results["transformers eager"][2], meta)
            save_and_describe(rows, args, f"{args.model}, {args.prompt}-token prompts, {args.new_tokens} new tokens, "
                              "greedy", argv, "e2e")
    print("| dtype | batch | system | tokens/s (min-max) | x transformers eager | compile s | greedy agree |")
    print("|---|---|---|---|---|---|---|")
    base = {(r["dtype"], r["batch"]): r["tokens_per_s"] for r in rows if r["system"] == "transformers eager"}
    for r in rows:
        print(f"| {r['dtype']} | {r['batch']} | {r['system']} | {r['tokens_per_s']} ({r['tokens_per_s_min']}-"
              f"{r['tokens_per_s_max']}) | {r['tokens_per_s'] / base[(r['dtype'], r['batch'])]:.2f}x | "
              f"{r['compile_s']} | {r['agree']} |")


if __name__ == "__main__":
    main()
