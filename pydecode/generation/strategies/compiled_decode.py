"""``generate(..., compile=True)``: greedy decoding and sampling with each decoding step compiled as one graph.

The prompt's forward runs eagerly into a static KV cache sized prompt + ``max_new_tokens`` rounded up to a bucket
(:mod:`.compile_options`). Each decoding step — the model forward on the rows' last tokens, the call's logits
processors, the draw (pydecode's sampling op, a ``torch.library`` custom op) and the bookkeeping (history, token
counts, finished rows) — is one ``torch.compile(fullgraph=True, dynamic=False)`` graph over tensors of fixed shapes:
finished rows keep running and emit the pad token (they are masked, never removed), the cache position, the draw's
step and the attention mask are tensors, so no step recompiles. The host reads the "every row finished" flag every
``stop_check_every`` steps; the sequences are then cut where plain decoding would have stopped (the graph counts the
steps in which some row was still unfinished), so the result equals eager decoding's.

Supported: greedy decoding and sampling with the processors pydecode runs on the device (penalties, n-gram and
bad-word bans, min length, forced tokens, suppression, ...), eos, padding, ``num_return_sequences``, a streamer,
the KIVI cache (``cache_implementation="kivi"``: :class:`pydecode.cache.StaticKiviCache`, the same packing).
Anything else raises ``NotImplementedError`` naming it.
"""
from __future__ import annotations

import types

import torch
import torch._inductor.config as inductor_config
from transformers import StaticCache

from ...cache import KiviCache, StaticKiviCache
from ...cache.static_kivi import settings as kivi_settings
from ...ops.backends import resolve
from ...ops.random import position_seeds
from ...ops.sample import sample_unchecked
from ..compile_options import COMPILED, bucket_for, cache_key, compile_kwargs
from ..context import DecodeContext
from ..logits.processors import StepView
from ..model.compile_passes import inductor_patch


def check_compilable(ctx: DecodeContext) -> None:
    """Raise ``NotImplementedError`` naming what ``compile=True`` does not run for this call."""
    config, runner, pipeline = ctx.config, ctx.runner, ctx.pipeline
    if ctx.runs != "sample":
        raise NotImplementedError(f"compile=True runs greedy decoding and sampling, not the {ctx.strategy!r} "
                                  "strategy; call generate without compile for it")
    if getattr(ctx.model.config, "is_encoder_decoder", False):
        raise NotImplementedError("compile=True runs decoder-only models; call generate without compile for "
                                  "encoder-decoder models")
    kivi = isinstance(runner.cache, KiviCache) and config.cache_implementation == "kivi"  # StaticKiviCache runs it
    unsupported = {
        "a cache passed in (past_key_values) or cache_implementation": not kivi and (
            runner.cache.get_seq_length() > 0 or type(runner.cache).__name__ != "DynamicCache"
            or config.cache_implementation is not None),
        "use_cache=False": not config.use_cache,
        "inputs_embeds": runner.prompt_embeds is not None,
        "prefill_chunk_size": runner.prefill_chunk is not None,
        "per-position model inputs (token_type_ids, ...)": runner.positional is not None,
        "a logits_processor list": bool(pipeline.logits_processor),
        "guidance_scale": pipeline.guidance is not None,
        "prefix_allowed_tokens_fn": pipeline.constraint is not None,
        "watermarking_config": pipeline.watermark is not None,
        "stop_strings or stopping_criteria": bool(ctx.stops.criteria),
        "return_dict_in_generate": bool(config.return_dict_in_generate),
        "dynatemp_range": isinstance(ctx.params.dynatemp_range, torch.Tensor) or ctx.params.dynatemp_range != 0.0,
    }
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise NotImplementedError(f"compile=True does not support {', '.join(named)} yet; call generate without "
                                  "compile for it")


class DecodeGraph:
    """The compiled decoding step of one (model, rows, bucket, dtype, device, options) and its static cache."""

    def __init__(self, model, bucket: int, settings: dict, device, backend, kivi: KiviCache | None = None):
        self.cache = (StaticKiviCache.like(kivi, model.config, bucket) if kivi is not None
                      else StaticCache(config=model.config, max_cache_len=bucket))
        self.bucket = bucket
        self.inductor_patch = inductor_patch(device, backend, settings.get("decode_linear", True))
        # decode_step under a code object of its own: dynamo keeps graphs, and counts them toward its recompile
        # limit, per code object; a graph of another key never pushes this one out
        own = types.FunctionType(decode_step.__code__.replace(), decode_step.__globals__, decode_step.__name__)
        self.compiled = torch.compile(own, **compile_kwargs(settings, device))

    def step(self, *args) -> None:
        """Run the compiled step; a call that would need more graphs than dynamo keeps raises (never eager)."""
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True), \
                inductor_config.patch(self.inductor_patch):
            self.compiled(*args)

    @classmethod
    def get(cls, ctx: DecodeContext, settings: dict) -> DecodeGraph:
        """The cached graph for this call's shapes (built on first use), its cache emptied."""
        rows, device = ctx.input_ids.shape[0], ctx.input_ids.device
        bucket = bucket_for(ctx.max_length)
        per_model = COMPILED.setdefault(ctx.model, {})
        kivi = ctx.runner.cache if isinstance(ctx.runner.cache, KiviCache) else None
        key = cache_key(settings, rows, bucket, ctx.model.dtype, device) + (kivi_settings(kivi) if kivi else None,)
        if key not in per_model:
            per_model[key] = cls(ctx.model, bucket, settings, device, ctx.pipeline.backend, kivi)
        graph = per_model[key]
        graph.cache.reset()
        return graph


class StepState:
    """The tensors a decoding step reads and updates in place (fixed shapes)."""

    def __init__(self, ctx: DecodeContext, bucket: int, eos: torch.Tensor | None):
        rows, prompt_len = ctx.input_ids.shape
        device = ctx.input_ids.device
        self.mask = torch.ones(rows, bucket, dtype=torch.long, device=device)
        if ctx.attention_mask is not None:
            self.mask[:, :prompt_len] = ctx.attention_mask
            positions = (ctx.attention_mask.long().cumsum(-1) - 1).masked_fill(ctx.attention_mask == 0, 0)
        else:
            positions = torch.arange(prompt_len, device=device).expand(rows, -1)
        self.prefill_positions = positions
        self.positions = positions[:, -1:].clone()  # (rows, 1) of the last token fed
        fill = 0 if ctx.pad_id is None else ctx.pad_id
        self.history = torch.full((rows, bucket + 1), fill, dtype=torch.long, device=device)  # last: scratch
        self.history[:, :prompt_len] = ctx.input_ids
        self.length = torch.full((rows,), prompt_len, dtype=torch.long, device=device)  # tokens so far
        self.slot = torch.full((1,), prompt_len - 1, dtype=torch.long, device=device)  # cache slot of the last token
        self.drawn = torch.zeros((), dtype=torch.long, device=device)  # the draw's step: tokens generated so far
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=device)
        self.live_steps = torch.zeros((), dtype=torch.long, device=device)  # steps in which a row was unfinished
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        self.eos = eos
        self.pad = torch.tensor(fill, device=device) if ctx.pad_id is not None and eos is not None else None


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


def select(pipeline, draw, raw: torch.Tensor, state: StepState) -> torch.Tensor:
    """Processors, warpers and draw on raw logits (rows, V), then the token appended (finished rows: pad)."""
    scores = raw.to(torch.float32, memory_format=torch.contiguous_format, copy=True)[:, None]
    view = StepView(state.history, state.length[:, None], state.length)
    for processor in pipeline.steps:
        scores = processor.apply(scores, view)
    scores = scores[:, 0]
    p = pipeline.params
    tokens = draw(scores, p.temperature_of(scores), p.top_k, p.top_p, p.min_p, position_seeds(p.seeds, state.drawn),
                  0)
    if state.pad is not None:
        tokens = torch.where(state.unfinished, tokens, state.pad)
    state.history.scatter_(1, state.length[:, None], tokens[:, None])
    pipeline.record(tokens)
    state.live_steps += state.unfinished.any().long()
    if state.eos is not None:
        state.unfinished &= ~torch.isin(tokens, state.eos)
    state.length += 1
    state.drawn += 1
    state.tokens.copy_(tokens)
    return tokens


def decode_step(model, model_kwargs: dict, pipeline, draw, state: StepState) -> None:
    """One decoding step (the compiled graph): the last tokens through the model, then :func:`select`;
    ``model_kwargs`` holds the static cache under the model's cache argument."""
    state.slot += 1
    state.positions += 1
    out = model(input_ids=state.tokens[:, None], position_ids=state.positions,
                attention_mask=step_mask(state.mask, state.slot, model.dtype), cache_position=state.slot,
                use_cache=True, return_dict=True, **model_kwargs)
    select(pipeline, draw, out.logits[:, -1, :], state)


def pick_draw(pipeline, device):
    """The sampling function the step calls: the fused op of the fastest backend, or the reference for the
    warpers only it runs (typical, top-H, epsilon, eta)."""
    p = pipeline.params
    if p.cutoffs or isinstance(p.typical_p, torch.Tensor) or p.typical_p < 1.0:
        cutoffs = p.cutoffs
        return lambda scores, t, k, tp, mp, seeds, step: sample_unchecked(
            scores, t, k, tp, mp, seeds, step, p.typical_p, cutoffs=cutoffs)
    return resolve("top_k_top_p_sample", device, pipeline.backend)[1]


def run(ctx: DecodeContext, settings: dict):
    """Decode as :func:`pydecode.generation.strategies.sample.run` does, each step through the compiled graph."""
    check_compilable(ctx)
    model, runner, pipeline = ctx.model, ctx.runner, ctx.pipeline
    graph = DecodeGraph.get(ctx, settings)
    state = StepState(ctx, graph.bucket, pipeline.eos_ids)
    prompt_len = ctx.input_ids.shape[1]
    model_kwargs = dict(runner.model_kwargs, **{runner.cache_argument: graph.cache})
    out = model(input_ids=ctx.input_ids, position_ids=state.prefill_positions,
                attention_mask=prefill_mask(state.mask, prompt_len, model.dtype),
                cache_position=torch.arange(prompt_len, device=ctx.input_ids.device), use_cache=True,
                return_dict=True, **model_kwargs)
    pipeline.prepare(out.logits.shape[-1], out.logits.device)
    draw = pick_draw(pipeline, out.logits.device)
    select(pipeline, draw, out.logits[:, -1, :], state)
    every = 1 if ctx.streamer is not None else settings.get("stop_check_every", 8)
    cur_len = prompt_len + 1
    while True:
        if ctx.streamer is not None:
            ctx.streamer.put(state.tokens.cpu())
        if cur_len >= ctx.max_length or ctx.stops.out_of_time():
            break
        if state.eos is not None and (cur_len - prompt_len) % every == 0 and not bool(state.unfinished.any()):
            break
        graph.step(model, model_kwargs, pipeline, draw, state)
        cur_len += 1
    if ctx.streamer is not None:
        ctx.streamer.end()
    end = prompt_len + int(state.live_steps) if state.eos is not None else cur_len
    return state.history[:, :end]
