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
Anything else raises ``NotImplementedError`` naming it (the strategy and config in ``strategies.choose``, the built
pieces in :func:`~pydecode.generation.model.compiled_step.check_built_call`). The step state lives in the cached graph
and is refilled in place by each call (:mod:`~pydecode.generation.model.compiled_step`).
"""
from __future__ import annotations

import torch

from ...ops.backends import resolve
from ...ops.random import position_seeds
from ...ops.sample import sample_unchecked
from ..context import DecodeContext
from ..logits.processors import StepView
from ..model.compiled_step import (
    DecodeGraph,
    check_built_call,
    forward_prompt,
    prompt_positions,
    refill_mask,
    static,
    step_mask,
)


class StepState:
    """The tensors a decoding step reads and updates in place (fixed shapes), allocated once per graph and
    refilled by :meth:`refill` at each call (same storage every call); ``eos`` / ``pad`` are the call's, read only."""

    def __init__(self, rows: int, bucket: int, device):
        self.mask = torch.ones(rows, bucket, dtype=torch.long, device=device)
        self.positions = torch.zeros(rows, 1, dtype=torch.long, device=device)  # of the last token fed
        self.history = torch.zeros(rows, bucket + 1, dtype=torch.long, device=device)  # last column: scratch
        self.length = torch.zeros(rows, dtype=torch.long, device=device)  # tokens so far
        self.slot = torch.zeros(1, dtype=torch.long, device=device)  # cache slot of the last token
        self.drawn = torch.zeros((), dtype=torch.long, device=device)  # the draw's step: tokens generated so far
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=device)
        self.live_steps = torch.zeros((), dtype=torch.long, device=device)  # steps in which a row was unfinished
        self.tokens = torch.zeros(rows, dtype=torch.long, device=device)
        static(*self.tensors())
        self.eos = self.pad = None

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors the step mutates."""
        return (self.mask, self.positions, self.history, self.length, self.slot, self.drawn, self.unfinished,
                self.live_steps, self.tokens)

    def refill(self, ctx: DecodeContext, eos: torch.Tensor | None) -> torch.Tensor:
        """Start a call in place; returns the prompt's positions (rows, prompt_len) for its forward."""
        rows, prompt_len = ctx.input_ids.shape
        refill_mask(self.mask, ctx.attention_mask)
        positions = prompt_positions(ctx.attention_mask, rows, prompt_len, self.mask.device)
        self.positions.copy_(positions[:, -1:])
        fill = 0 if ctx.pad_id is None else ctx.pad_id
        self.history.fill_(fill)
        self.history[:, :prompt_len].copy_(ctx.input_ids)
        self.length.fill_(prompt_len)
        self.slot.fill_(prompt_len - 1)
        for tensor in (self.drawn, self.live_steps, self.tokens):
            tensor.zero_()
        self.unfinished.fill_(True)
        self.eos = eos
        self.pad = torch.tensor(fill, device=self.mask.device) if ctx.pad_id is not None and eos is not None else None
        return positions


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
    check_built_call(ctx)
    pipeline = ctx.pipeline
    graph = DecodeGraph.get(ctx, settings, decode_step)
    rows, prompt_len = ctx.input_ids.shape
    if graph.state is None:
        graph.state = StepState(rows, graph.bucket, ctx.input_ids.device)
    state = graph.state
    positions = state.refill(ctx, ctx.eos_ids)
    out, model_kwargs = forward_prompt(ctx, graph, state.mask, positions)
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
        graph.step(ctx.model, model_kwargs, pipeline, draw, state)
        cur_len += 1
    if ctx.streamer is not None:
        ctx.streamer.end()
    end = prompt_len + int(state.live_steps) if state.eos is not None else cur_len
    return state.history[:, :end].clone()
