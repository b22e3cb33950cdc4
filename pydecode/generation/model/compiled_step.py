"""What the compiled decoding steps (``generate(..., compile=...)``) share: the checks that need the built call, the
cached graph of one shape (its static KV cache and its step state), and the attention masks over the static cache.

A :class:`DecodeGraph` is built once per (strategy step, model, rows, bucket, dtype, device, options) and kept in
:data:`~pydecode.generation.compile_options.COMPILED`. Its ``state`` (the tensors the step mutates) is allocated once
too and refilled in place by each call, so that the compiled step sees the same storage every call: CUDA graphs
(``mode="reduce-overhead"``) replay on fixed addresses, and a tensor the step mutates must keep its address.
"""
from __future__ import annotations

import types

import torch
import torch._inductor.config as inductor_config
from transformers import StaticCache

from ...cache import KiviCache, StaticKiviCache
from ...cache.static_kivi import settings as kivi_settings
from ..compile_options import COMPILED, bucket_for, cache_key, compile_kwargs
from .compile_passes import inductor_patch


def check_built_call(ctx) -> None:
    """Raise ``NotImplementedError`` naming what a compiled step does not run among the pieces the call built (its
    cache, inputs and processors); the strategy and config checks ran in ``strategies.choose``."""
    runner, pipeline = ctx.runner, ctx.pipeline
    kivi = isinstance(runner.cache, KiviCache) and ctx.config.cache_implementation == "kivi"  # StaticKiviCache runs it
    unsupported = {
        "a cache passed in (past_key_values)": not kivi and (
            runner.cache.get_seq_length() > 0 or type(runner.cache).__name__ != "DynamicCache"),
        "inputs_embeds": runner.prompt_embeds is not None,
        "prefill_chunk_size": runner.prefill_chunk is not None,
        "per-position model inputs (token_type_ids, ...)": runner.positional is not None,
        "a logits_processor list": bool(pipeline.logits_processor),
        "guidance_scale": pipeline.guidance is not None,
        "prefix_allowed_tokens_fn": pipeline.constraint is not None,
        "watermarking_config": pipeline.watermark is not None,
        "stop_strings or stopping_criteria": bool(ctx.stops.criteria),
        "dynatemp_range": isinstance(ctx.params.dynatemp_range, torch.Tensor) or ctx.params.dynatemp_range != 0.0,
    }
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise NotImplementedError(f"compile=True does not support {', '.join(named)} yet; call generate without "
                                  "compile for it")


class DecodeGraph:
    """The compiled decoding step of one (step, model, rows, bucket, dtype, device, options), its static cache and
    its step state (``state``: None until the strategy allocates it on first use, then refilled in place)."""

    def __init__(self, model, bucket: int, settings: dict, device, backend, step_fn, kivi: KiviCache | None = None):
        self.cache = (StaticKiviCache.like(kivi, model.config, bucket) if kivi is not None
                      else StaticCache(config=model.config, max_cache_len=bucket))
        self.bucket = bucket
        self.state = None
        self.inductor_patch = inductor_patch(device, backend, settings.get("decode_linear", True))
        # the step under a code object of its own: dynamo keeps graphs, and counts them toward its recompile
        # limit, per code object; a graph of another key never pushes this one out
        own = types.FunctionType(step_fn.__code__.replace(), step_fn.__globals__, step_fn.__name__)
        self.compiled = torch.compile(own, **compile_kwargs(settings, device))

    def step(self, *args) -> None:
        """Run the compiled step; a call that would need more graphs than dynamo keeps raises (never eager)."""
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True), \
                inductor_config.patch(self.inductor_patch):
            self.compiled(*args)

    @classmethod
    def get(cls, ctx, settings: dict, step_fn, signature: tuple = ()) -> DecodeGraph:
        """The cached graph of ``step_fn`` for this call's shapes (built on first use), its cache emptied;
        ``signature``: what else fixes the graph (beams, candidates, the strategy's constants)."""
        rows, device = ctx.input_ids.shape[0], ctx.input_ids.device
        bucket = bucket_for(ctx.max_length)
        per_model = COMPILED.setdefault(ctx.model, {})
        kivi = ctx.runner.cache if isinstance(ctx.runner.cache, KiviCache) else None
        key = (step_fn.__qualname__, signature, *cache_key(settings, rows, bucket, ctx.model.dtype, device),
               kivi_settings(kivi) if kivi else None)
        if key not in per_model:
            per_model[key] = cls(ctx.model, bucket, settings, device, ctx.pipeline.backend, step_fn, kivi)
        graph = per_model[key]
        graph.cache.reset()
        return graph


def static(*tensors: torch.Tensor) -> None:
    """Mark step-state tensors as living at fixed addresses (CUDA graphs then neither copy nor skip them)."""
    for tensor in tensors:
        torch._dynamo.mark_static_address(tensor)


def refill_mask(mask: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
    """Refill the step's (rows, bucket) attention mask in place: the prompt's mask, then ones."""
    mask.fill_(1)
    if attention_mask is not None:
        mask[:, : attention_mask.shape[1]].copy_(attention_mask)


def prompt_positions(attention_mask: torch.Tensor | None, rows: int, prompt_len: int, device) -> torch.Tensor:
    """(rows, prompt_len) positions of the prompt's tokens (left padding skipped)."""
    if attention_mask is None:
        return torch.arange(prompt_len, device=device).expand(rows, -1)
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def prefill_mask(mask: torch.Tensor, length: int, dtype) -> torch.Tensor:
    """Additive (rows, 1, length, bucket) mask of the prompt's causal forward over the static cache."""
    slots = torch.arange(mask.shape[1], device=mask.device)
    positions = torch.arange(length, device=mask.device)
    allowed = mask.bool()[:, None, :] & (slots[None, None, :] <= positions[None, :, None])
    return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None]


def step_mask(mask: torch.Tensor, slot: torch.Tensor, dtype) -> torch.Tensor:
    """Additive (rows, 1, 1, bucket) mask of one decoding step at cache ``slot`` (1,)."""
    slots = torch.arange(mask.shape[1], device=mask.device)
    allowed = mask.bool() & (slots[None, :] <= slot)
    return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[:, None, None]


def forward_prompt(ctx, graph: DecodeGraph, mask: torch.Tensor, positions: torch.Tensor):
    """The prompt's eager forward into the graph's static cache; returns the model output and the model keywords
    the steps pass (the static cache under the model's cache argument)."""
    model, runner = ctx.model, ctx.runner
    prompt_len = ctx.input_ids.shape[1]
    model_kwargs = dict(runner.model_kwargs, **{runner.cache_argument: graph.cache})
    out = model(input_ids=ctx.input_ids, position_ids=positions,
                attention_mask=prefill_mask(mask, prompt_len, model.dtype),
                cache_position=torch.arange(prompt_len, device=ctx.input_ids.device), use_cache=True,
                return_dict=True, **model_kwargs)
    return out, model_kwargs
