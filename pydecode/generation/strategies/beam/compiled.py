"""``generate(..., compile=True)`` for beam search and beam sampling: each decoding step one compiled graph.

The prompt's forward runs eagerly into a static KV cache (rows = prompts x beams, length bucketed as for sampling,
:mod:`~pydecode.generation.model.compiled_step`). Each later step is one ``torch.compile(fullgraph=True,
dynamic=False)`` graph over fixed shapes: the model forward, log-softmax and the call's processors (beam sampling:
the warpers and Gumbel noise on the per-prompt counter-based stream), pydecode's ``beam_topk`` op (a
``torch.library`` custom op), the split of the ``K`` candidates into finished hypotheses and running beams as
:mod:`.beam` does it, and the beam reorder of the static cache and of the penalty counts (in place, no shape
change). Finished hypotheses live in fixed-size tensors (B, N, bucket) with their scores and generated lengths.

The graph also updates the stopping bound (``early_stopping`` True / False / "never") and a sticky "done" flag; the
host reads it every ``stop_check_every`` steps. Steps past "done" leave the finished hypotheses as they are, so the
result equals eager beam search (which equals transformers'). Finished prompts keep running (eager beam search may
drop them: the same result). With ``return_dict_in_generate`` the step also keeps each token's source row and
its scores / logits for the host to copy (``sequences_scores``, ``scores``, ``logits``, ``beam_indices``). Not run:
diverse beam search, attentions, hidden states and logprob outputs (``strategies.choose`` names them).
"""
from __future__ import annotations

from dataclasses import astuple, dataclass, replace

import torch

from ....ops.backends import resolve
from ....ops.random import gumbel_noise, position_seeds
from ...context import DecodeContext
from ...logits.processors import StepView
from ...model.compiled_step import (
    DecodeGraph,
    check_built_call,
    forward_prompt,
    prompt_positions,
    refill_mask,
    static,
    step_mask,
)
from ...output import GenerateBeamOutput
from .beam import warp_for_beams
from .candidates import NEVER_PICK


@dataclass(frozen=True)
class BeamSettings:
    """The constants of a call's beam step (the graph is specialised on them)."""

    batch: int
    beams: int
    k: int  # candidates per prompt
    length_penalty: float
    early_stopping: bool | str
    do_sample: bool
    renormalize: bool
    min_keep: int  # tokens the warpers keep for beam sampling
    record: bool  # a dict output: the step keeps its scores and logits and the hypotheses' beam indices
    # as eager beam search scores a step: "fused" (no processor acts: the log-softmax runs inside beam_topk, whose
    # log-probs differ from torch's in the last bits), "processed" (log-softmax, processors, beam_topk), or
    # "either" (processors acting at some lengths only: both, and the host's ``active`` flag picks)
    scoring: str = "fused"


class BeamState:
    """The tensors a beam step reads and updates in place, allocated once per graph and refilled by :meth:`refill`
    at each call. Rows are ``b * N + j``; ``W`` is the static cache's length."""

    def __init__(self, batch: int, beams: int, width: int, device):
        B, N, W = batch, beams, width
        long = dict(dtype=torch.long, device=device)
        self.mask = torch.ones(B * N, W, **long)
        self.positions = torch.zeros(B * N, 1, **long)  # of the last token fed
        self.slot = torch.zeros(1, **long)  # cache slot of the last token
        self.tokens = torch.zeros(B * N, **long)  # the running beams' last tokens
        self.cur_len = torch.zeros((), **long)  # tokens of every running beam so far
        self.step = torch.zeros((), **long)  # beam sampling's draw step
        self.limits = torch.zeros(2, **long)  # the prompt's length and max_length (tensors: no recompile)
        self.running = torch.zeros(B * N, W, **long)
        self.running_scores = torch.zeros(B, N, device=device)
        self.finished = torch.zeros(B, N, W, **long)
        self.finished_scores = torch.zeros(B, N, device=device)
        self.finished_len = torch.zeros(B, N, **long)  # generated tokens of each finished hypothesis
        self.is_finished = torch.zeros(B, N, dtype=torch.bool, device=device)
        self.may_improve = torch.ones(B, 1, dtype=torch.bool, device=device)
        self.done = torch.zeros((), dtype=torch.bool, device=device)  # sticky: eager beam search would have stopped
        self.active = torch.zeros((), dtype=torch.bool, device=device)  # a processor acts at this step ("either")
        self.live = torch.zeros((), **long)  # steps that began before "done": the steps eager search runs
        # with a dict output (allocated by :meth:`record`): each token's source row, per beam and hypothesis, and
        # the last step's processed scores and raw logits
        self.running_from = self.finished_from = self.scores_seen = self.logits_seen = None
        static(*self.tensors())
        self.eos = None

    def record(self, vocab: int) -> None:
        """Allocate the dict output's tensors (once)."""
        if self.running_from is None:
            rows, width = self.running.shape
            self.running_from = torch.full((rows, width), -1, dtype=torch.int32, device=self.running.device)
            self.finished_from = self.running_from.view_as(self.finished).clone()
            self.scores_seen = torch.zeros(rows, vocab, device=self.running.device)
            self.logits_seen = torch.zeros(rows, vocab, device=self.running.device)
            static(self.running_from, self.finished_from, self.scores_seen, self.logits_seen)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The tensors the step mutates."""
        return (self.mask, self.positions, self.slot, self.tokens, self.cur_len, self.step, self.limits,
                self.running, self.running_scores, self.finished, self.finished_scores, self.finished_len,
                self.is_finished, self.may_improve, self.done, self.active, self.live,
                *(t for t in (self.running_from, self.finished_from, self.scores_seen, self.logits_seen)
                  if t is not None))

    def refill(self, ctx: DecodeContext, fill: int) -> torch.Tensor:
        """Start a call in place; returns the prompt's positions (rows, prompt_len) for its forward."""
        rows, prompt_len = ctx.input_ids.shape
        refill_mask(self.mask, ctx.attention_mask)
        positions = prompt_positions(ctx.attention_mask, rows, prompt_len, self.mask.device)
        self.positions.copy_(positions[:, -1:])
        self.slot.fill_(prompt_len - 1)
        self.cur_len.fill_(prompt_len)
        self.limits.copy_(torch.tensor([prompt_len, ctx.max_length]))
        self.running.fill_(fill)
        self.running[:, :prompt_len].copy_(ctx.input_ids)
        self.running_scores.zero_()
        self.running_scores[:, 1:] = NEVER_PICK  # only beam 0 may start, or all beams would pick the same tokens
        self.finished.copy_(self.running.view_as(self.finished))
        self.finished_scores.fill_(NEVER_PICK)
        for tensor in (self.tokens, self.step, self.finished_len, self.live):
            tensor.zero_()
        if self.running_from is not None:
            self.running_from.fill_(-1)
            self.finished_from.fill_(-1)
        self.is_finished.fill_(False)
        self.may_improve.fill_(True)
        self.done.fill_(False)
        self.eos = ctx.eos_ids
        return positions


def candidates(pipeline, topk, beam: BeamSettings, state: BeamState, logits: torch.Tensor):
    """The top-K ``(scores, tokens, beams)`` (B, K) of the running beams' next tokens, as eager beam search picks
    them (logits: (B * N, V) float32)."""
    B, N, K = beam.batch, beam.beams, beam.k
    running = state.running_scores.view(-1)
    if beam.scoring == "fused":
        return topk(logits, running, N, K, True)
    at = state.cur_len.expand(B * N)
    view = StepView(state.running, at[:, None], at)
    scores = torch.log_softmax(logits, dim=-1)[:, None]
    for processor in pipeline.steps:
        scores = processor.apply(scores, view)
    scores = scores[:, 0]
    if beam.do_sample:
        scores = warp_for_beams(scores, pipeline.params, beam.min_keep)
    if beam.renormalize:
        scores = scores.log_softmax(dim=-1)
    if beam.record:
        state.scores_seen.copy_(scores)
    if beam.scoring == "either":
        processed, fused = topk(scores, running, N, K, False), topk(logits, running, N, K, True)
        return tuple(torch.where(state.active, p, f) for p, f in zip(processed, fused))
    if not beam.do_sample:
        return topk(scores, running, N, K, False)
    # Gumbel-top-k on each prompt's stream at this step (the stream eager beam sampling reads)
    params = pipeline.params
    seeds = position_seeds(params.seeds.view(B, N)[:, 0], state.step.expand(B))
    noise = gumbel_noise(seeds, 0, N * scores.shape[1]).view_as(scores)
    t = params.temperature
    if isinstance(t, torch.Tensor) or t <= 0:
        noise = noise * (torch.as_tensor(t, device=noise.device).reshape(-1, 1) > 0)
    _, tokens, beams = topk(scores + noise, running, N, K, False)
    rows = beams + torch.arange(B, device=beams.device)[:, None] * N
    return scores[rows, tokens] + running[rows], tokens, beams


def beam_select(pipeline, topk, beam: BeamSettings, cache_layers, state: BeamState, raw: torch.Tensor) -> None:
    """One beam step on the raw logits (B * N, V): candidates, finished hypotheses, running beams, the cache and
    penalty counts reordered, the stopping bound; every update in place on ``state``."""
    B, N, K = beam.batch, beam.beams, beam.k
    W = state.running.shape[1]
    prompt_len, max_length = state.limits[0], state.limits[1]
    logits = raw.to(torch.float32, copy=True)
    if beam.record:
        state.logits_seen.copy_(logits)
    scores, tokens, beams = candidates(pipeline, topk, beam, state, logits)
    row_offset = torch.arange(B, device=tokens.device)[:, None] * N
    source_rows = (beams + row_offset).view(-1)
    cand = state.running.index_select(0, source_rows)
    cand.scatter_(1, state.cur_len.expand(B * K, 1), tokens.view(-1, 1))
    hits = state.cur_len + 1 >= max_length
    if state.eos is not None:
        hits = hits | torch.isin(tokens, state.eos)
    else:
        hits = hits.expand(B, K)

    # the N best candidates that did not stop keep running
    alive_scores = scores + hits.to(torch.float32) * NEVER_PICK
    keep = torch.topk(alive_scores, k=N)[1]
    state.running_scores.copy_(alive_scores.gather(1, keep))
    keep_rows = (keep + row_offset * (K // N)).view(-1)
    state.running.copy_(cand.index_select(0, keep_rows))

    # candidates in the top N that stopped may enter the finished set (unchanged once eager search would stop)
    generated = state.cur_len + 1 - prompt_len
    finals = scores / generated.double() ** beam.length_penalty
    full = torch.all(state.is_finished, dim=-1, keepdim=True) & (beam.early_stopping is True)
    finals = finals + full.to(torch.float32) * NEVER_PICK
    finals = finals + (~state.may_improve).to(torch.float32) * NEVER_PICK
    just_finished = hits & (torch.arange(K, device=hits.device) < N)[None, :]
    finals = finals + (~just_finished) * NEVER_PICK
    merged_scores = torch.cat((state.finished_scores, finals), dim=1)
    best = torch.topk(merged_scores, k=N)[1]
    kept = state.done
    state.finished_scores.copy_(torch.where(kept, state.finished_scores, merged_scores.gather(1, best)))
    is_finished = torch.cat((state.is_finished, just_finished), dim=1).gather(1, best)
    state.is_finished.copy_(torch.where(kept, state.is_finished, is_finished))
    lengths = torch.cat((state.finished_len, generated.expand(B, K)), dim=1).gather(1, best)
    state.finished_len.copy_(torch.where(kept, state.finished_len, lengths))
    merged = torch.cat((state.finished, cand.view(B, K, W)), dim=1).gather(1, best[:, :, None].expand(-1, -1, W))
    state.finished.copy_(torch.where(kept, state.finished, merged))
    if beam.record:
        cand_from = state.running_from.index_select(0, source_rows)
        cand_from.scatter_(1, (generated - 1).expand(B * K, 1), source_rows.to(torch.int32)[:, None])
        state.running_from.copy_(cand_from.index_select(0, keep_rows))
        merged = torch.cat((state.finished_from, cand_from.view(B, K, W)), dim=1)
        state.finished_from.copy_(torch.where(kept, state.finished_from, merged.gather(
            1, best[:, :, None].expand(-1, -1, W))))
    state.live += (~kept).long()

    # the running beams now continue rows `sources`: the cache and the token counts follow
    sources = source_rows.view(B, K).gather(1, keep).view(-1)
    for layer in cache_layers:
        layer.keys.copy_(layer.keys.index_select(0, sources))
        layer.values.copy_(layer.values.index_select(0, sources))
    pipeline.reorder(sources)
    next_tokens = tokens.gather(1, keep).view(-1)
    pipeline.record(next_tokens)
    state.tokens.copy_(next_tokens)
    state.cur_len += 1
    state.step += 1
    update_bound(beam, state, hits)


def update_bound(beam: BeamSettings, state: BeamState, hits: torch.Tensor) -> None:
    """The per-prompt improvement bound after a step, and the sticky "done" flag: no prompt may still improve (or
    every candidate stopped), as eager beam search decides after each step."""
    prompt_len, max_length = state.limits[0], state.limits[1]
    if beam.early_stopping == "never" and beam.length_penalty > 0.0:
        best_length = max_length - prompt_len
    else:
        best_length = state.cur_len - prompt_len
    best_possible = state.running_scores[:, :1] / best_length.double() ** beam.length_penalty
    worst = torch.where(state.is_finished, torch.min(state.finished_scores, dim=1, keepdim=True)[0], NEVER_PICK)
    state.may_improve &= torch.any(best_possible > worst, dim=-1, keepdim=True)
    full = torch.all(state.is_finished, dim=-1) & (beam.early_stopping is True)
    # a prompt that cannot improve, or is full with early_stopping=True, keeps its hypotheses from now on; a dict
    # output counts the steps, and there eager search (computing every prompt) stops only once no prompt improves
    # or every prompt is full
    if beam.record:
        state.done |= ~torch.any(state.may_improve) | torch.all(full) | torch.all(hits)
    else:
        state.done |= torch.all(~state.may_improve.view(-1) | full) | torch.all(hits)


def beam_step(model, model_kwargs: dict, pipeline, topk, beam: BeamSettings, cache_layers, state: BeamState) -> None:
    """One decoding step (the compiled graph): the running beams' last tokens through the model, then
    :func:`beam_select`; ``model_kwargs`` holds the static cache under the model's cache argument."""
    state.slot += 1
    state.positions += 1
    out = model(input_ids=state.tokens[:, None], position_ids=state.positions,
                attention_mask=step_mask(state.mask, state.slot, model.dtype), cache_position=state.slot,
                use_cache=True, return_dict=True, **model_kwargs)
    beam_select(pipeline, topk, beam, cache_layers, state, out.logits[:, -1, :])


def run(ctx: DecodeContext, settings: dict):
    """Beam search or beam sampling as :func:`.beam.run` does, each step after the prompt's through the compiled
    graph; returns the best ``num_return_sequences`` hypotheses of each prompt (B * R, L) as a LongTensor, or with
    ``return_dict_in_generate`` a :class:`GenerateBeamOutput` (its ``past_key_values`` None: the static cache
    belongs to the compiled step and the next call)."""
    check_built_call(ctx)
    config = ctx.config
    B, N = ctx.batch, ctx.expand
    n_eos = len(ctx.eos_ids) if ctx.eos_ids is not None else 0
    keep = {name: [] if config.return_dict_in_generate and getattr(config, f"output_{name}") else None
            for name in ("scores", "logits")}
    beam = BeamSettings(
        batch=B, beams=N, k=max(2, 1 + n_eos) * N,
        length_penalty=float(config.length_penalty if config.length_penalty is not None else 1.0),
        early_stopping=config.early_stopping if config.early_stopping is not None else False,
        do_sample=bool(config.do_sample), renormalize=bool(config.renormalize_logits),
        min_keep=n_eos + 1 if n_eos else 2, record=bool(config.return_dict_in_generate))
    graph = DecodeGraph.get(ctx, settings, beam_step, astuple(beam))
    if graph.state is None:
        graph.state = BeamState(B, N, graph.bucket, ctx.input_ids.device)
    state = graph.state
    # transformers fills unused positions with `pad or eos[0]` (a pad id of 0 counts as unset), -1 without eos
    positions = state.refill(ctx, (ctx.pad_id or int(ctx.eos_ids[0])) if n_eos else -1)
    out, model_kwargs = forward_prompt(ctx, graph, state.mask, positions)
    pipeline, vocab = ctx.pipeline, out.logits.shape[-1]
    pipeline.prepare(vocab, out.logits.device)
    if beam.record:
        state.record(vocab)
    prompt_len = ctx.input_ids.shape[1]
    acting = [pipeline.any_active(length, out.logits[:, -1]) for length in range(prompt_len, ctx.max_length)]
    if beam.do_sample or beam.renormalize or keep["scores"] is not None or all(acting):
        beam = replace(beam, scoring="processed")
    elif any(acting):
        beam = replace(beam, scoring="either")
    topk = resolve("beam_topk", out.logits.device, ctx.backend)[1]
    state.active.fill_(acting[0])
    beam_select(pipeline, topk, beam, graph.cache.layers, state, out.logits[:, -1, :])
    every = settings.get("stop_check_every", 8)
    cur_len, host_syncs = prompt_len + 1, 2  # and the two reads after the loop
    while True:
        for name, kept in keep.items():
            if kept is not None:
                kept.append((state.scores_seen if name == "scores" else state.logits_seen).clone())
        if cur_len >= ctx.max_length:
            break
        if (cur_len - prompt_len) % every == 0:
            host_syncs += 1
            if bool(state.done):
                break
        if beam.scoring == "either":
            state.active.fill_(acting[cur_len - prompt_len])  # the host's length, as eager beam search asks
        graph.step(ctx.model, model_kwargs, pipeline, topk, beam, graph.cache.layers, state)
        cur_len += 1
    R = int(config.num_return_sequences or 1)
    generated = int(state.finished_len[:, :R].max())  # read once, after the loop
    sequences = state.finished[:, :R, : prompt_len + generated].reshape(B * R, -1).clone()
    if not beam.record:
        return sequences
    steps = int(state.live)  # the steps eager search runs; the later ones only kept the graph's pace
    keep = {name: tuple(kept[:steps]) if kept is not None else None for name, kept in keep.items()}
    return GenerateBeamOutput(
        sequences=sequences,
        sequences_scores=state.finished_scores[:, :R].reshape(-1).clone() if config.output_scores else None,
        scores=keep["scores"], logits=keep["logits"],
        beam_indices=state.finished_from[:, :R, :generated].reshape(B * R, -1).clone(),
        host_syncs=host_syncs)
