"""KIVI KV cache: perplexity, KV memory and decode-step time against the full-precision cache.

    python benchmarks/bench_kv_cache.py                      # CPU-sized run, SmolLM2-135M-Instruct (a few minutes)
    python benchmarks/bench_kv_cache.py --models smollm2 gemma3-270m --device cuda --contexts 1024 8192 32768

Sections (each a CSV in benchmarks/results/, and a table in benchmarks/README_kivi.md):

- perplexity of benchmarks/data/public_domain_us_documents.txt (2,073 SmolLM2 tokens), fed through the cache in
  chunks of ``--chunk`` tokens, so every chunk attends to the packed past: full precision, KIVI-4, KIVI-2
  (G=32, R=128); a chunk sees its own tokens exactly (they sit in the residual), as a decode step sees itself;
- KV memory at 4k and 32k tokens (batch 1, fp16 K/V) measured on the tensors the caches hold;
- decode-step time at each context: the attention op alone (packed cache per backend vs SDPA on fp K/V) and one
  whole model step (SDPA + DynamicCache, KIVI, transformers' QuantizedCache for each installed backend).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache, QuantizedCache
from transformers.utils import is_hqq_available, is_optimum_quanto_available

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pydecode.cache import KiviCache, activate, kivi_attention, kivi_pack  # noqa: E402
from pydecode.models import load_model  # noqa: E402
from pydecode.ops.backends import active_backends  # noqa: E402

HERE = Path(__file__).resolve().parent
TEXT = HERE / "data" / "public_domain_us_documents.txt"
KIVI = {"kivi4": dict(nbits=4, group_size=32, residual_length=128),
        "kivi2": dict(nbits=2, group_size=32, residual_length=128)}


def _cache(name, config, max_length=None):
    if name == "fp":
        return DynamicCache(config=config)
    if name.startswith("quantized-"):
        _, backend_name, nbits = name.split("-")
        return QuantizedCache(backend=backend_name, config=config, nbits=int(nbits), q_group_size=32,
                              residual_length=128)
    return KiviCache(config, **KIVI[name], max_length=max_length)


@torch.inference_mode()
def perplexity(model, ids, name, chunk):
    """exp(mean NLL) of ids (1, N), fed in chunks of `chunk` tokens through the cache `name`."""
    cache = _cache(name, model.config)
    nll, count = 0.0, 0
    with activate(model):
        for start in range(0, ids.shape[1] - 1, chunk):
            piece = ids[:, start:start + chunk + 1]
            logits = model(piece[:, :-1], past_key_values=cache).logits.float()
            nll += torch.nn.functional.cross_entropy(logits[0], piece[0, 1:], reduction="sum").item()
            count += piece.shape[1] - 1
    return math.exp(nll / count)


def _fill(cache, config, length, device, dtype=torch.float16):
    """Put `length` random tokens of K/V in every layer of `cache` (no model run)."""
    text = config.get_text_config(decoder=True)
    heads, dim = text.num_key_value_heads, getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    g = torch.Generator(device=device).manual_seed(0)
    for layer_idx, layer in enumerate(cache.layers):
        for start in range(0, length, 4096):
            n = min(4096, length - start)
            k = torch.randn(1, heads, n, dim, generator=g, device=device, dtype=dtype)
            out = cache.update(k, torch.randn_like(k), layer_idx)
            if hasattr(layer, "flush"):
                layer.flush()
            del out


def memory_rows(name, model, lengths, device):
    rows = []
    for length in lengths:
        sizes = {}
        for cache_name in ("fp", "kivi4", "kivi2"):
            cache = _cache(cache_name, model.config, max_length=length)  # preallocated, as make_cache does
            _fill(cache, model.config, length, device)
            if cache_name == "fp":
                sizes[cache_name] = sum(t.numel() * t.element_size() for layer in cache.layers
                                        for t in (layer.keys, layer.values))
            else:
                sizes[cache_name] = cache.memory_footprint()["total_bytes"]
            del cache
        for cache_name, size in sizes.items():
            rows.append(dict(model=name, tokens=length, cache=cache_name, kv_mib=round(size / 2**20, 2),
                             ratio_vs_fp16=round(sizes["fp"] / size, 2)))
    return rows


def _time(fn, device, repeat):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat * 1e3


def attention_rows(name, model, contexts, device, repeat):
    """The attention op alone, one decode query over `context` cached tokens, per backend vs SDPA."""
    text = model.config.get_text_config(decoder=True)
    hq, hkv = text.num_attention_heads, text.num_key_value_heads
    d = getattr(text, "head_dim", None) or text.hidden_size // hq
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    meta = torch.float16 if dtype == torch.float16 else torch.float32
    rows = []
    for context in contexts:
        g = torch.Generator(device=device).manual_seed(0)
        k = torch.randn(1, hkv, context, d, generator=g, device=device, dtype=dtype)
        v = torch.randn_like(k)
        q = torch.randn(1, hq, 1, d, generator=g, device=device, dtype=dtype)
        sdpa = _time(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                     device, repeat)
        rows.append(dict(model=name, context=context, impl="sdpa fp", ms=round(sdpa, 4), speedup_vs_sdpa=1.0))
        n_quant = (context - 64) // 32 * 32
        for label, cfg in KIVI.items():
            packed = kivi_pack(k[:, :, :n_quant], None, cfg["nbits"], 32, True, meta)
            packed += kivi_pack(v[:, :, :n_quant], None, cfg["nbits"], 32, False, meta)
            rk, rv = k[:, :, n_quant:].contiguous(), v[:, :, n_quant:].contiguous()
            for backend in active_backends(device.type):
                if backend == "triton" and device.type != "cuda":
                    continue  # the interpreter is for correctness only
                ms = _time(lambda: kivi_attention(q, *packed, rk, rv, None, n_quant, context - n_quant, d ** -0.5,
                                                  cfg["nbits"], 32, backend=backend), device, repeat)
                rows.append(dict(model=name, context=context, impl=f"{label} {backend}", ms=round(ms, 4),
                                 speedup_vs_sdpa=round(sdpa / ms, 2)))
    return rows


@torch.inference_mode()
def decode_rows(name, model, contexts, device, repeat):
    """One whole-model decode step after a prompt of `context` tokens, per cache."""
    caches = ["fp", "kivi4", "kivi2"]
    for backend_name, available in (("quanto", is_optimum_quanto_available()), ("hqq", is_hqq_available())):
        if available:
            caches += [f"quantized-{backend_name}-4", f"quantized-{backend_name}-2"]
    rows = []
    for context in contexts:
        ids = torch.randint(100, 1000, (1, context), generator=torch.Generator().manual_seed(0)).to(device)
        step = torch.tensor([[42]], device=device)
        base = None
        for cache_name in caches:
            cache = _cache(cache_name, model.config)
            with activate(model):
                model(ids, past_key_values=cache)
                # each step is undone after it, so every timed step sees the same context (KIVI's flush, one per
                # G steps and a small pack of G tokens, is left out)
                position = torch.tensor([[context]], device=device)

                def one_step():
                    model(step, past_key_values=cache, position_ids=position)
                    if hasattr(cache, "crop") and cache.is_croppable:
                        cache.crop(-1)
                    else:
                        for layer in cache.layers:
                            if hasattr(layer, "n_residual"):
                                layer.n_residual -= 1

                ms = _time(one_step, device, repeat)
            base = base or ms
            rows.append(dict(model=name, context=context, cache=cache_name, ms=round(ms, 2),
                             speedup_vs_fp=round(base / ms, 2)))
            del cache
    return rows


def _write(rows, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _table(rows):
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk", type=int, default=32, help="tokens per forward in the perplexity run")
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--attention-contexts", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--memory-tokens", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 avoids spin-wait stalls on a busy host)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {"perplexity": [], "memory": [], "attention": [], "decode": []}
    for name in args.models:
        model, tokenizer = load_model(name, dtype=torch.float16 if device.type == "cuda" else torch.float32)
        model.to(device)
        ids = tokenizer(TEXT.read_text(), return_tensors="pt").input_ids.to(device)
        ppl = {c: perplexity(model, ids, c, args.chunk) for c in ("fp", "kivi4", "kivi2")}
        for c, value in ppl.items():
            results["perplexity"].append(dict(model=name, tokens=ids.shape[1], cache=c, perplexity=round(value, 4),
                                              vs_fp_pct=round(100 * (value / ppl["fp"] - 1), 2)))
        print(_table(results["perplexity"]), flush=True)
        results["memory"] += memory_rows(name, model, args.memory_tokens, device)
        results["attention"] += attention_rows(name, model, args.attention_contexts, device, args.repeat)
        results["decode"] += decode_rows(name, model, args.contexts, device, args.repeat)
        del model
    out = Path(args.out)
    for section, rows in results.items():
        _write(rows, out / f"kv_cache_{section}.csv")
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
               if device.type == "cpu" else torch.cuda.get_device_name(device))
    quantized = [b for b, ok in (("quanto", is_optimum_quanto_available()), ("hqq", is_hqq_available())) if ok]
    report = [
        "# KIVI KV cache benchmark", "",
        f"Machine: {machine} ({device.type}); torch {torch.__version__}, threads {torch.get_num_threads()}.",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"transformers' QuantizedCache backends installed: {', '.join(quantized) or 'none (quanto, hqq missing)'}.",
        "", "## Perplexity", f"Chunks of {args.chunk} tokens through the cache; G=32, R=128.", "",
        _table(results["perplexity"]), "", "## KV memory (batch 1, fp16 K/V)", "", _table(results["memory"]), "",
        "## Attention op, one decode query", "", _table(results["attention"]), "",
        "## Whole-model decode step", "", _table(results["decode"]), "",
    ]
    (HERE / "README_kivi.md").write_text("\n".join(report))
    print("\n".join(report))


if __name__ == "__main__":
    main()
