"""KIVI KV cache: quality, KV memory and decode-step time against full precision and transformers' QuantizedCache.

    python benchmarks/bench_kv_cache.py --threads 1                          # SmolLM2, every section, CPU
    python benchmarks/bench_kv_cache.py --models gemma3-270m --sections perplexity agreement memory
    python benchmarks/bench_kv_cache.py --device cuda --contexts 1024 8192 32768

QuantizedCache needs the ``bench`` extra (``pip install -e .[bench]``: optimum-quanto, hqq); a backend that is missing
or fails is reported in the row's note. Sections (each writes ``results/kv_cache_<section>_<models>.csv`` with its plot
and prints a table):

- ``perplexity``: benchmarks/data/public_domain_us_documents.txt fed through the cache in chunks of ``--chunk``
  tokens, so every chunk attends to the packed past (as decode does), with the mean KL divergence of each next-token
  distribution from the full-precision one. Caches: fp; KIVI-4/2 as shipped (G=32, R=128, sinks, key clipping);
  KIVI-4/2 "plain" (no sinks, no clipping: the KIVI paper's algorithm); QuantizedCache (quanto and HQQ, 4 and 2 bits,
  groups of 32 and 64 channels, R=128).
- ``sinks``: the perplexity run for KIVI-4/2 (key clipping on) with each of ``--sink-lengths`` exact first tokens.
- ``agreement``: greedy decoding of ``--new-tokens`` tokens after ``--prompts`` windows of ``--prompt-length`` tokens
  of the same text (one unpadded batch): the share of positions before the first token that differs from the
  full-precision cache's, and the share of equal positions overall; "fp16-kv" (the fp cache rounded to float16)
  shows how often mere rounding flips a greedy token.
- ``memory``: KV bytes at each of ``--memory-tokens`` (batch 1, fp16 K/V) measured on the tensors the caches hold.
- ``attention``: one layer's decode attention, one query, best of ``--repeat``: SDPA on fp K/V, KIVI's op per
  backend, and a QuantizedCache layer's per-step work (dequantize the whole history, concatenate, SDPA).
- ``decode``: one whole-model decode step (batch 1) after ``--contexts`` cached tokens of random K/V, per cache; the
  best of ``--repeat`` interleaved rounds. Every cache's periodic re-quantization (KIVI packs G tokens every G steps,
  QuantizedCache re-quantizes the whole history every R steps) falls outside the timed steps.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import DynamicCache, QuantizedCache
from transformers.cache_utils import HQQQuantizedLayer, QuantoQuantizedLayer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generate import machine  # noqa: E402
from plot_results import plot_csv  # noqa: E402

from pydecode.cache import KiviCache, KiviLayer, activate, kivi_attention, kivi_pack  # noqa: E402
from pydecode.models import load_model  # noqa: E402
from pydecode.ops.backends import active_backends  # noqa: E402

HERE = Path(__file__).resolve().parent
TEXT = HERE / "data" / "public_domain_us_documents.txt"
SECTIONS = ("perplexity", "sinks", "agreement", "memory", "attention", "decode")
KIVI = {
    "kivi4": dict(nbits=4), "kivi2": dict(nbits=2),
    "kivi4-plain": dict(nbits=4, sink_length=0, key_clipping=False),
    "kivi2-plain": dict(nbits=2, sink_length=0, key_clipping=False),
}
# QuantizedCache: (backend, nbits, q_group_size); HQQ groups along head_dim with axis 1 (its axis 0 groups strided
# elements of the flattened tensor), quanto does so with its axis 0.
QUANTIZED = {f"{b}{n}-g{g}": (b, n, g) for b in ("quanto", "hqq") for n in (4, 2) for g in (32, 64)}
TIMED_QUANTIZED = ["quanto4-g32", "quanto2-g32", "hqq4-g32", "hqq2-g32"]  # the speed sections: KIVI's G = 32


class HalfPrecisionCache(DynamicCache):
    """The full-precision cache with keys and values rounded to float16, as GPUs usually store them: a yardstick for
    how often plain rounding flips a greedy token."""

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        return super().update(key_states.half().to(key_states.dtype), value_states.half().to(value_states.dtype),
                              layer_idx, *args, **kwargs)


def make_cache(name, config, max_length=None):
    """A fresh cache `name` (fp, fp16-kv, a key of KIVI or of QUANTIZED, or "kivi<bits>-sink<S>") for a model
    `config`; G=32 and R=128 throughout."""
    if name == "fp":
        return DynamicCache(config=config)
    if name == "fp16-kv":
        return HalfPrecisionCache(config=config)
    if name in QUANTIZED:
        backend, nbits, group = QUANTIZED[name]
        axis = 1 if backend == "hqq" else 0
        return QuantizedCache(backend=backend, config=config, nbits=nbits, q_group_size=group, residual_length=128,
                              axis_key=axis, axis_value=axis)
    if "-sink" in name:
        bits, sinks = name.removeprefix("kivi").split("-sink")
        return KiviCache(config, int(bits), 32, 128, max_length, sink_length=int(sinks))
    return KiviCache(config, group_size=32, residual_length=128, max_length=max_length, **KIVI[name])


def _error_note(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"


@torch.inference_mode()
def _next_token_log_probs(model, ids, cache, chunk):
    """Yield, per chunk of `chunk` tokens fed through `cache`, the float32 log-probs (chunk, vocab) of the next ones."""
    with activate(model):
        for start in range(0, ids.shape[1] - 1, chunk):
            logits = model(ids[:, start:min(start + chunk, ids.shape[1] - 1)], past_key_values=cache).logits
            yield logits[0].float().log_softmax(-1)


def perplexity_rows(name, model, ids, caches, chunk):
    """exp(mean NLL) of ids (1, N) and mean KL(fp || cache) per predicted token, per cache."""
    targets = ids[0, 1:].split(chunk)
    reference = list(_next_token_log_probs(model, ids, make_cache("fp", model.config), chunk))
    count = ids.shape[1] - 1
    fp_ppl = math.exp(-sum(r.gather(1, t[:, None]).sum().item() for r, t in zip(reference, targets)) / count)
    rows = [dict(model=name, tokens=ids.shape[1], cache="fp", perplexity=round(fp_ppl, 4), vs_fp_pct=0.0,
                 kl_vs_fp=0.0, note="")]
    for cache_name in caches:
        nll = kl = 0.0
        try:
            chunks = _next_token_log_probs(model, ids, make_cache(cache_name, model.config), chunk)
            for log_probs, ref, target in zip(chunks, reference, targets):
                nll -= log_probs.gather(1, target[:, None]).sum().item()
                kl += (ref.exp() * (ref - log_probs)).sum().item()
        except Exception as error:  # a QuantizedCache backend may not run here: report it in the table
            rows.append(dict(model=name, tokens=ids.shape[1], cache=cache_name, perplexity="", vs_fp_pct="",
                             kl_vs_fp="", note=_error_note(error)))
            continue
        ppl = math.exp(nll / count)
        rows.append(dict(model=name, tokens=ids.shape[1], cache=cache_name, perplexity=round(ppl, 4),
                         vs_fp_pct=round(100 * (ppl / fp_ppl - 1), 2), kl_vs_fp=round(kl / count, 5), note=""))
        print(rows[-1], flush=True)
    return rows


@torch.inference_mode()
def _greedy(model, prompts, cache, new_tokens):
    """Greedy continuation (B, new_tokens) of unpadded `prompts` (B, P) through `cache`."""
    out, ids = [], prompts
    with activate(model):
        for _ in range(new_tokens):
            ids = model(ids, past_key_values=cache).logits[:, -1].argmax(-1, keepdim=True)
            out.append(ids)
    return torch.cat(out, dim=1)


def agreement_rows(name, model, ids, caches, n_prompts, prompt_length, new_tokens):
    """Greedy tokens of each cache vs the full-precision cache's, over `n_prompts` windows of the text."""
    starts = torch.linspace(0, ids.shape[1] - prompt_length, n_prompts).long()
    prompts = torch.stack([ids[0, s:s + prompt_length] for s in starts.tolist()])
    max_length = prompt_length + new_tokens
    expected = _greedy(model, prompts, make_cache("fp", model.config), new_tokens)
    rows = []
    for cache_name in caches:
        try:
            got = _greedy(model, prompts, make_cache(cache_name, model.config, max_length), new_tokens)
        except Exception as error:  # QuantizedCache rejects models with sliding-window layers
            rows.append(dict(model=name, prompts=n_prompts, prompt_tokens=prompt_length, new_tokens=new_tokens,
                             cache=cache_name, agree_before_divergence="", agree_overall="", identical_rows="",
                             note=_error_note(error)))
            continue
        equal = got == expected
        before_divergence = equal.int().cumprod(dim=1).sum(dim=1).float() / new_tokens
        rows.append(dict(model=name, prompts=n_prompts, prompt_tokens=prompt_length, new_tokens=new_tokens,
                         cache=cache_name, agree_before_divergence=round(before_divergence.mean().item(), 4),
                         agree_overall=round(equal.float().mean().item(), 4),
                         identical_rows=int(equal.all(dim=1).sum()), note=""))
        print(rows[-1], flush=True)
    return rows


def _shapes(config):
    text = config.get_text_config(decoder=True)
    heads = text.num_key_value_heads
    return heads, getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads


def _fill(cache, config, length, device, dtype):
    """Put `length` tokens of random K/V (seeded) in every layer of `cache`, as a prefill would (no model run)."""
    heads, dim = _shapes(config)
    g = torch.Generator(device=device).manual_seed(0)
    for layer_idx, layer in enumerate(cache.layers):
        k = torch.randn(1, heads, length, dim, generator=g, device=device, dtype=dtype)
        cache.update(k, torch.randn_like(k), layer_idx)
        if isinstance(layer, KiviLayer):
            layer.flush()


def memory_rows(name, model, lengths, device):
    rows = []
    for length in lengths:
        sizes = {}
        for cache_name in ("fp", "kivi4", "kivi2"):
            cache = make_cache(cache_name, model.config, max_length=length)  # preallocated, as make_cache does
            _fill(cache, model.config, length, device, torch.float16)
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


def _best_ms(fn, device, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def _quantized_layer(name):
    """One full-attention layer of the QuantizedCache `name` (QuantizedCache itself rejects sliding-window models)."""
    backend, nbits, group = QUANTIZED[name]
    layer_class = HQQQuantizedLayer if backend == "hqq" else QuantoQuantizedLayer
    axis = 1 if backend == "hqq" else 0
    return layer_class(nbits=nbits, axis_key=axis, axis_value=axis, q_group_size=group, residual_length=128)


def attention_rows(name, model, contexts, quantized, device, repeat):
    """One layer's decode attention (one query over `context` cached tokens): SDPA on fp K/V, KIVI's op per backend,
    and each QuantizedCache layer's `update` (dequantize everything, concatenate) followed by SDPA."""
    text = model.config.get_text_config(decoder=True)
    hq = text.num_attention_heads
    hkv, d = _shapes(model.config)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    rows = []
    for context in contexts:
        g = torch.Generator(device=device).manual_seed(0)
        k = torch.randn(1, hkv, context, d, generator=g, device=device, dtype=dtype)
        v = torch.randn_like(k)
        q = torch.randn(1, hq, 1, d, generator=g, device=device, dtype=dtype)
        sdpa = _best_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True),  # noqa: B023
                        device, repeat)
        times = {"sdpa fp": sdpa}
        n_quant = (context - 64) // 32 * 32
        for nbits in (4, 2):
            packed = kivi_pack(k[:, :, :n_quant], None, nbits, 32, True, dtype)
            packed += kivi_pack(v[:, :, :n_quant], None, nbits, 32, False, dtype)
            rk, rv = k[:, :, n_quant:].contiguous(), v[:, :, n_quant:].contiguous()
            for backend in active_backends(device.type):
                if backend == "triton" and device.type != "cuda":
                    continue  # the interpreter is for correctness only
                times[f"kivi{nbits} {backend}"] = _best_ms(
                    lambda: kivi_attention(q, *packed, rk, rv, None, n_quant, context - n_quant, d ** -0.5, nbits,  # noqa: B023
                                           32, backend=backend), device, repeat)  # noqa: B023
        notes = {}
        for quantized_name in quantized:
            try:
                layer = _quantized_layer(quantized_name)
                layer.update(k, v)  # the prefill: everything quantized, an empty residual

                def step():  # the residual grows by one token a call (re-quantization waits for 128)
                    keys, values = layer.update(k[:, :, -1:], v[:, :, -1:])  # noqa: B023
                    torch.nn.functional.scaled_dot_product_attention(q, keys, values, enable_gqa=True)  # noqa: B023

                times[quantized_name] = _best_ms(step, device, repeat)
            except Exception as error:
                notes[quantized_name] = _error_note(error)
        for impl, ms in times.items():
            kivi = [t for i, t in times.items() if impl in QUANTIZED and i.startswith(f"kivi{QUANTIZED[impl][1]} ")]
            rows.append(dict(model=name, context=context, impl=impl, ms=round(ms, 4),
                             speedup_vs_sdpa=round(sdpa / ms, 2),
                             kivi_speedup=round(ms / min(kivi), 2) if kivi else "", note=""))
        rows += [dict(model=name, context=context, impl=impl, ms="", speedup_vs_sdpa="", kivi_speedup="", note=note)
                 for impl, note in notes.items()]
    return rows


def _undo_step(cache) -> None:
    """Drop the token a decode step appended, so that every timed step sees the same context. QuantizedCache is left
    to grow (by one token a step: its re-quantization waits for R = 128 of them), a sliding window is bounded."""
    for layer in cache.layers:
        if isinstance(layer, KiviLayer):
            layer.n_residual -= 1
        elif isinstance(cache, DynamicCache) and not layer.is_sliding:
            layer.crop(-1)


@torch.inference_mode()
def decode_rows(name, model, contexts, caches, device, repeat):
    """One whole-model decode step (batch 1) after `context` cached tokens, per cache: the best of `repeat` rounds
    that step every cache in turn (a load change on a shared host hits them alike), and KIVI's speed-up over each
    QuantizedCache of the same bit width."""
    rows = []
    step = torch.tensor([[42]], device=device)
    for context in contexts:
        position = torch.tensor([[context]], device=device)
        built, times = {}, {}
        for cache_name in ["fp"] + caches:
            try:
                built[cache_name] = make_cache(cache_name, model.config, max_length=context + 1)
                _fill(built[cache_name], model.config, context, device, model.dtype)
            except Exception as error:  # e.g. QuantizedCache on a model with sliding-window layers
                built.pop(cache_name, None)
                rows.append(dict(model=name, context=context, cache=cache_name, ms="", speedup_vs_fp="",
                                 kivi_speedup="", note=_error_note(error)))
        with activate(model):
            for round_ in range(repeat + 1):  # round 0 warms up
                for cache_name, cache in built.items():
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    start = time.perf_counter()
                    model(step, past_key_values=cache, position_ids=position)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    elapsed = (time.perf_counter() - start) * 1e3
                    _undo_step(cache)
                    if round_:
                        times[cache_name] = min(times.get(cache_name, math.inf), elapsed)
        del built
        for cache_name, ms in times.items():
            kivi = f"kivi{QUANTIZED[cache_name][1]}" if cache_name in QUANTIZED else None
            rows.append(dict(model=name, context=context, cache=cache_name, ms=round(ms, 2),
                             speedup_vs_fp=round(times["fp"] / ms, 2),
                             kivi_speedup=round(ms / times[kivi], 2) if kivi in times else "", note=""))
            print(rows[-1], flush=True)
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
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--chunk", type=int, default=32, help="tokens per forward in the perplexity run")
    parser.add_argument("--quantized", nargs="*", default=list(QUANTIZED), choices=list(QUANTIZED),
                        help="QuantizedCache variants in the perplexity run")
    parser.add_argument("--sink-lengths", type=int, nargs="+", default=[0, 1, 4, 16, 32])
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--prompt-length", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=100)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
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
    load_before = os.getloadavg()
    started = time.time()
    results = {section: [] for section in args.sections}
    for name in args.models:
        model, tokenizer = load_model(name, dtype=torch.float16 if device.type == "cuda" else torch.float32)
        model.to(device)
        ids = tokenizer(TEXT.read_text(), return_tensors="pt").input_ids.to(device)
        if "perplexity" in results:
            results["perplexity"] += perplexity_rows(name, model, ids, list(KIVI) + args.quantized, args.chunk)
        if "sinks" in results:
            caches = [f"kivi{bits}-sink{sinks}" for bits in (4, 2) for sinks in args.sink_lengths]
            results["sinks"] += perplexity_rows(name, model, ids, caches, args.chunk)
        if "agreement" in results:
            caches = ["fp16-kv", "kivi4", "kivi2", "kivi4-plain", "kivi2-plain", "quanto4-g32"]
            results["agreement"] += agreement_rows(name, model, ids, caches, args.prompts, args.prompt_length,
                                                   args.new_tokens)
        if "memory" in results:
            results["memory"] += memory_rows(name, model, args.memory_tokens, device)
        if "attention" in results:
            results["attention"] += attention_rows(name, model, args.attention_contexts, TIMED_QUANTIZED, device,
                                                   args.repeat)
        if "decode" in results:
            results["decode"] += decode_rows(name, model, args.contexts, ["kivi4", "kivi2", *TIMED_QUANTIZED], device,
                                             args.repeat)
        del model
    out = Path(args.out)
    suffix = "_".join(args.models)
    for section, rows in results.items():
        path = out / f"kv_cache_{section}_{suffix}.csv"
        _write(rows, path)
        plot_csv(path)
    load_after = os.getloadavg()
    report = [
        f"Machine: {machine(args.device)}, {os.cpu_count()} cores; torch {torch.__version__}, transformers "
        f"{transformers.__version__}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"{(time.time() - started) / 60:.0f} min.",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(argv if argv is not None else sys.argv[1:])}`",
    ]
    for section, rows in results.items():
        report += ["", f"### {section}", "", _table(rows)]
    print("\n".join(report))


if __name__ == "__main__":
    main()
