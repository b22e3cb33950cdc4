"""Diverse (group) beam search with the semantics of transformers 4.x (Vijayakumar et al., arXiv 1610.02424).

The N beams of a prompt form G groups of ``S = N / G``. At each step the groups pick their tokens in order; group g
first subtracts ``diversity_penalty * count`` from the log-probs of every token that groups 0..g-1 of the same
prompt picked at this step (Hamming diversity), then runs the usual processors and keeps the ``K = max(2, n_eos + 1)
* S`` best candidates of its S beams. Each (prompt, group) keeps its own S best finished hypotheses (scored
``sum_logprobs / generated_length ** length_penalty``) and is done once it holds S of them and, per
``early_stopping``, no running beam can beat the worst. At the end every prompt returns its best hypotheses over
all groups, shorter ones padded and closed with eos.

Two quirks of transformers 4.x are kept on purpose so that ``beam_indices`` match its golden outputs: the index
history of a hypothesis that ends in eos is taken from group 0's history of the same row, and the histories of the
hypotheses closed at the end are read from the group-major list at the prompt-major position.
"""
from __future__ import annotations

import dataclasses

import torch

from ....ops.beam_topk import beam_topk_unchecked
from ...context import DecodeContext
from ...logits.pipeline import LogitsPipeline
from ...logits.prefix_constraint import PrefixConstraint
from ...model.compat import with_cache
from ...output import GenerateBeamOutput, requested_logprobs
from .candidates import LOGPROB_FIELDS, NEVER_PICK, candidate_logprobs, gather_beams


def _group_pipeline(ctx: DecodeContext, rows: torch.Tensor) -> LogitsPipeline:
    """A logits pipeline over the rows of one group (per-row parameters sliced to those rows)."""
    params = dataclasses.replace(ctx.params, **{
        f.name: getattr(ctx.params, f.name)[rows] for f in dataclasses.fields(ctx.params)
        if isinstance(getattr(ctx.params, f.name), torch.Tensor)
    })
    p = ctx.pipeline
    mask = ctx.attention_mask[rows] if ctx.attention_mask is not None else None
    constraint = None
    if p.constraint is not None:  # transformers 4.x: the group's rows, its beams per prompt
        constraint = PrefixConstraint(p.constraint.fn, rows.shape[0], ctx.expand // int(ctx.config.num_beam_groups))
    return LogitsPipeline(config=ctx.config, params=params, prompt_ids=ctx.input_ids[rows], attention_mask=mask,
                          eos_ids=ctx.eos_ids, logits_processor=p.logits_processor, backend=p.backend,
                          encoder_ids=p.extra.encoder_ids[rows], constraint=constraint)


class _Hypotheses:
    """The S best finished hypotheses of every (prompt, group): scores in float64 as transformers' Python floats."""

    def __init__(self, batch: int, groups: int, size: int, max_length: int, steps: int, device, tracks: dict):
        shape = (batch, groups, size)
        self.size = size
        self.scores = torch.full(shape, float("-inf"), dtype=torch.float64, device=device)
        self.valid = torch.zeros(shape, dtype=torch.bool, device=device)
        self.seqs = torch.zeros(*shape, max_length, dtype=torch.long, device=device)
        self.lengths = torch.zeros(shape, dtype=torch.long, device=device)
        self.beam_from = torch.full((*shape, steps), -1, dtype=torch.long, device=device)
        # per-position values that follow the sequences (logprobs): like ``tracks``' (rows, L, ...) tensors
        self.tracks = {name: t.new_zeros(*shape, *t.shape[1:]) for name, t in tracks.items()}

    def add(self, g: int, scores, valid, seqs, lengths, beam_from, tracks: dict) -> None:
        """Offer (B, C) new hypotheses to group g, in rank order; existing ones win ties, as in transformers.
        ``tracks``: the hypotheses' (B, C, L, ...) values of :attr:`tracks`."""
        all_scores = torch.cat((self.scores[:, g], scores), dim=1)
        all_valid = torch.cat((self.valid[:, g], valid), dim=1)
        key = torch.where(all_valid, all_scores, torch.full_like(all_scores, float("-inf")))
        by_score = torch.sort(key, dim=1, descending=True, stable=True)[1]
        valid_first = torch.sort(all_valid.gather(1, by_score).to(torch.int8), dim=1, descending=True, stable=True)[1]
        order = by_score.gather(1, valid_first[:, : self.size])
        self.scores[:, g] = all_scores.gather(1, order)
        self.valid[:, g] = all_valid.gather(1, order)
        self.lengths[:, g] = torch.cat((self.lengths[:, g], lengths), dim=1).gather(1, order)
        both = torch.cat((self.seqs[:, g], seqs), dim=1)
        self.seqs[:, g] = both.gather(1, order[:, :, None].expand(-1, -1, both.shape[2]))
        both = torch.cat((self.beam_from[:, g], beam_from), dim=1)
        self.beam_from[:, g] = both.gather(1, order[:, :, None].expand(-1, -1, both.shape[2]))
        for name, values in tracks.items():
            self.tracks[name][:, g] = gather_beams(torch.cat((self.tracks[name][:, g], values), dim=1), order)

    def full(self, g: int) -> torch.Tensor:
        return self.valid[:, g].sum(dim=1) >= self.size

    def worst(self, g: int) -> torch.Tensor:
        return torch.where(self.valid[:, g], self.scores[:, g], float("inf")).min(dim=1).values


class _GroupBeamSearch:
    """State of one diverse beam search call (rows ``b * N + g * S + j``)."""

    def __init__(self, ctx: DecodeContext):
        config, self.ctx = ctx.config, ctx
        self.batch, self.beams = ctx.batch, ctx.expand
        self.groups = int(config.num_beam_groups)
        self.size = self.beams // self.groups
        self.prompt_len, self.max_length = ctx.input_ids.shape[1], ctx.max_length
        self.device = device = ctx.input_ids.device
        self.eos = ctx.eos_ids  # (E,) or None
        self.k = max(2, 1 + (len(self.eos) if self.eos is not None else 0)) * self.size
        self.length_penalty = config.length_penalty if config.length_penalty is not None else 1.0
        self.early_stopping = config.early_stopping if config.early_stopping is not None else False
        self.diversity = float(config.diversity_penalty or 0.0)
        self.pad = ctx.pad_id if ctx.pad_id is not None else 0
        B, N, S, L = self.batch, self.beams, self.size, self.max_length
        self.width = L - self.prompt_len + 1  # an eos hypothesis of group g > 0 records one index more
        self.seqs = torch.zeros(B * N, L, dtype=torch.long, device=device)
        self.seqs[:, : self.prompt_len] = ctx.input_ids
        self.beam_scores = torch.full((B, N), NEVER_PICK, device=device)
        self.beam_scores[:, ::S] = 0.0
        self.beam_scores = self.beam_scores.view(-1)
        self.rows = [(torch.arange(B, device=device)[:, None] * N + g * S + torch.arange(S, device=device)).view(-1)
                     for g in range(self.groups)]
        self.pipelines = [_group_pipeline(ctx, rows) for rows in self.rows]
        self.history = torch.full((self.groups, B * S, self.width), -1, dtype=torch.long, device=device)
        self.top_n, logprobs = requested_logprobs(config)
        self.tracks = {}  # logprobs per sequence position, when asked for: they follow the rows as the tokens do
        if logprobs:
            self.tracks = {"logprob": torch.zeros(B * N, L, device=device),
                           "processed": torch.zeros(B * N, L, device=device)}
        if logprobs and self.top_n:
            self.tracks["top_values"] = torch.zeros(B * N, L, self.top_n, device=device)
            self.tracks["top_ids"] = torch.zeros(B * N, L, self.top_n, dtype=torch.long, device=device)
        self.hyps = _Hypotheses(B, self.groups, S, L, self.width, device, self.tracks)
        self.done = torch.zeros(B, self.groups, dtype=torch.bool, device=device)
        self.local_offset = torch.arange(B, device=device)[:, None] * S
        on = bool(config.return_dict_in_generate)
        self.keep = {name: [] if on and getattr(config, f"output_{name}") else None
                     for name in ("scores", "logits", "attentions", "hidden_states")}

    def run(self):
        ctx, runner = self.ctx, self.ctx.runner
        outputs = runner.prefill(ctx.input_ids)
        cur_len, step, host_syncs = self.prompt_len, 0, 0
        while True:
            for name in ("attentions", "hidden_states"):
                if self.keep[name] is not None:
                    self.keep[name].append(getattr(outputs, name))
            raw = outputs.logits[:, -1, :].to(dtype=torch.float32, copy=True)
            if self.keep["logits"] is not None:
                self.keep["logits"].append(raw.clone())
            processed = torch.zeros_like(raw) if self.keep["scores"] is not None else None
            current = torch.zeros(raw.shape[0], dtype=torch.long, device=self.device)
            moved = torch.zeros_like(current)
            for g in range(self.groups):
                self._group_step(g, raw, current, moved, processed, cur_len, step)
            if processed is not None:
                self.keep["scores"].append(processed)
            runner.cache.reorder_cache(moved)
            cur_len, step = cur_len + 1, step + 1
            host_syncs += 1
            if cur_len >= self.max_length or bool(self.done.all()) or self._criteria_stop(cur_len):
                break
            outputs = runner.step(current)
        return self._finish(cur_len, host_syncs)

    def _group_step(self, g, raw, current, moved, processed, cur_len, step) -> None:
        """Group g picks its tokens; writes them into ``current`` and its cache sources into ``moved``."""
        B, N, S, K, V = self.batch, self.beams, self.size, self.k, raw.shape[1]
        rows = self.rows[g]
        scores = raw_lp = torch.log_softmax(raw[rows], dim=-1)
        if self.diversity > 0 and g > 0:
            picked = current.view(B, N)[:, : g * S]
            counts = torch.zeros(B, V, dtype=torch.long, device=self.device).scatter_add_(
                1, picked, torch.ones_like(picked))
            scores = (scores.view(B, S, V) - self.diversity * counts[:, None, :]).view(B * S, V)
        scores = self.pipelines[g].process(scores, self.seqs[rows, :cur_len], cur_len)
        if processed is not None:
            processed[rows] = scores
        top, tokens, beams = beam_topk_unchecked(scores, self.beam_scores[rows], S, K, False, self.ctx.backend)
        local = beams + self.local_offset  # row within the group's (B * S) rows
        is_eos = torch.isin(tokens, self.eos) if self.eos is not None else torch.zeros_like(tokens, dtype=torch.bool)
        done = self.done[:, g : g + 1].clone()  # the flags as this step started

        # eos candidates ranked in the top S become hypotheses (length counts the eos; the sequence does not)
        offered = is_eos & (torch.arange(K, device=self.device) < S) & ~done
        length = (cur_len + 1 - self.prompt_len) ** self.length_penalty
        beam_from = self.history[0].index_select(0, local.view(-1)).view(B, K, self.width)
        beam_from[:, :, step if g == 0 else step + 1] = local
        group_seqs = self.seqs[rows]
        values = candidate_logprobs(raw_lp, scores, local.view(-1), tokens, self.top_n) if self.tracks else {}
        offered_tracks = {}
        for name, track in self.tracks.items():
            offered_tracks[name] = track[rows].index_select(0, local.view(-1)).view(B, K, *track.shape[1:])
            offered_tracks[name][:, :, cur_len] = values[name]
        self.hyps.add(g, top.double() / length, offered, group_seqs.index_select(0, local.view(-1)).view(B, K, -1),
                      torch.full_like(tokens, cur_len), beam_from, offered_tracks)
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            bound_length = self.max_length - self.prompt_len
        else:
            bound_length = cur_len + 1 - self.prompt_len
        bound = top[:, 0].double() / (bound_length ** self.length_penalty)
        finished = self.hyps.full(g) & ((self.early_stopping is True) | (self.hyps.worst(g) >= bound))
        self.done[:, g] |= finished & ~done[:, 0]

        # the first S other candidates continue; a done group carries pad tokens from row 0 (as transformers does)
        others = ~is_eos & (torch.cumsum(~is_eos, dim=1) <= S)
        pick = torch.sort(others.to(torch.int8), dim=1, descending=True, stable=True)[1][:, :S]
        next_scores = torch.where(done, 0.0, top.gather(1, pick))
        next_tokens = torch.where(done, self.pad, tokens.gather(1, pick)).view(-1)
        source = torch.where(done, 0, local.gather(1, pick)).view(-1)
        self.beam_scores[rows] = next_scores.view(-1)
        self.seqs[rows] = group_seqs.index_select(0, source)
        self.seqs[rows, cur_len] = next_tokens
        for name, track in self.tracks.items():
            track[rows] = track[rows].index_select(0, source)
            chosen = gather_beams(values[name], pick)
            track[rows, cur_len] = torch.where(done.view(B, 1, *[1] * (chosen.dim() - 2)), 0, chosen).flatten(0, 1)
        current[rows] = next_tokens
        moved[rows] = N * torch.div(source, S, rounding_mode="floor") + g * S + source % S
        self.pipelines[g].reorder(source)
        self.pipelines[g].record(next_tokens)
        self.history[g] = self.history[g].index_select(0, source)
        self.history[g][:, step] = source

    def _criteria_stop(self, cur_len: int) -> bool:
        stops = self.ctx.stops
        if stops.out_of_time():
            return True
        if not stops.criteria:
            return False
        done = torch.ones(self.seqs.shape[0], dtype=torch.bool, device=self.device)
        for criterion in stops.criteria:
            hit = criterion(self.seqs[:, :cur_len], None)
            done = done & (torch.full_like(done, hit) if isinstance(hit, bool) else hit.to(done.device))
        return bool(done.all())

    def _finish(self, cur_len: int, host_syncs: int):
        ctx, config = self.ctx, self.ctx.config
        B, G, S, L = self.batch, self.groups, self.size, self.max_length
        R = int(config.num_return_sequences or 1)
        length = (cur_len - self.prompt_len) ** self.length_penalty
        # transformers 4.x reads these histories from the group-major list at prompt-major positions
        flat_history = self.history.reshape(G * B * S, self.width)
        for g in range(G):
            rows = self.rows[g]
            positions = ((torch.arange(B, device=self.device)[:, None] * G + g) * S
                         + torch.arange(S, device=self.device)).view(-1)
            self.hyps.add(g, self.beam_scores[rows].view(B, S).double() / length,
                          (~self.done[:, g : g + 1]).expand(B, S),
                          self.seqs[rows].view(B, S, L), torch.full((B, S), cur_len, device=self.device),
                          flat_history[positions].view(B, S, self.width),
                          {name: t[rows].view(B, S, *t.shape[1:]) for name, t in self.tracks.items()})
        h = self.hyps
        # transformers pops the best from an ascending stable sort: among equal scores the last hypothesis wins
        key = torch.where(h.valid, h.scores, float("-inf")).view(B, G * S).flip(1)
        best = G * S - 1 - torch.sort(key, dim=1, descending=True, stable=True)[1][:, :R]
        scores = h.scores.view(B, G * S).gather(1, best).reshape(-1)
        lengths = h.lengths.view(B, G * S).gather(1, best).reshape(-1)
        seqs = h.seqs.view(B, G * S, L).gather(1, best[:, :, None].expand(-1, -1, L)).reshape(B * R, L)
        beam_from = h.beam_from.view(B, G * S, self.width).gather(
            1, best[:, :, None].expand(-1, -1, self.width)).reshape(B * R, self.width)
        out_len = min(int(lengths.max()) + 1, L)  # read once, after the loop
        positions = torch.arange(out_len, device=self.device)[None, :]
        sequences = torch.where(positions < lengths[:, None], seqs[:, :out_len], self.pad)
        closing = self.eos[0] if self.eos is not None else self.pad
        sequences = torch.where(positions == lengths[:, None], closing, sequences)
        if not config.return_dict_in_generate:
            return sequences
        indices = torch.full((B * R, out_len), -1, dtype=torch.long, device=self.device)
        width = min(out_len, self.width)
        indices[:, :width] = beam_from[:, :width]
        keep = {k: tuple(v) if v is not None else None for k, v in self.keep.items()}
        logprobs = {}
        for field, name in LOGPROB_FIELDS.items():
            if name in h.tracks:
                track = h.tracks[name].view(B, G * S, L, *h.tracks[name].shape[4:])
                picked = gather_beams(track, best).flatten(0, 1)[:, self.prompt_len: out_len]
                inside = positions[:, self.prompt_len:] <= lengths[:, None]  # the closing eos included
                logprobs[field] = torch.where(inside.view(*inside.shape, *[1] * (picked.dim() - 2)), picked, 0)
        return GenerateBeamOutput(
            sequences=sequences, sequences_scores=scores.float() if config.output_scores else None,
            scores=keep["scores"], logits=keep["logits"], beam_indices=indices if config.output_scores else None,
            attentions=keep["attentions"], hidden_states=keep["hidden_states"], **with_cache(ctx.runner.cache),
            host_syncs=host_syncs, **logprobs,
        )


def run(ctx: DecodeContext):
    """Diverse beam search (see the module docstring); returns what :func:`.beam.run` does."""
    return _GroupBeamSearch(ctx).run()
