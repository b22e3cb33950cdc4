"""Beam search and beam sampling with transformers 5 semantics; diverse (group) beam search is in group_beam.py.

One step, for ``B`` prompts of ``N`` beams each (rows ``b * N + j``):

1. model -> raw logits (B*N, V) -> log-softmax -> the logits pipeline (penalties, bans, min length, ...) ->
   for beam sampling the warpers (temperature, top-k, top-p, min-p, keeping at least ``n_eos + 1`` tokens);
2. ``beam_topk``: add each beam's running score and keep the ``K = max(2, n_eos + 1) * N`` best (token, beam)
   pairs per prompt, in one fused pass (log-softmax included when the pipeline leaves the scores alone). Beam
   sampling draws the K pairs without replacement instead (Gumbel-top-k on the per-prompt counter-based stream);
3. candidates that hit eos (or any stop) become finished hypotheses if they rank in the top N and beat the worst
   kept one after the length penalty; the N best others are the running beams of the next step;
4. the KV cache and the per-row token counts follow the running beams (one index-select per step).

The loop reads one flag back per step (may any prompt still improve?) and stops like transformers does with
``early_stopping`` True (N finished hypotheses), False (heuristic bound at the current length) or "never"
(bound at ``max_length`` when ``length_penalty > 0``). With several prompts, a prompt whose finished hypotheses can
no longer change leaves the batch (transformers keeps computing its beams), unless a dict output (per-step scores,
the cache) or user processors / stopping criteria see the rows.
"""
from __future__ import annotations

import torch

from ....ops.beam_topk import beam_topk_unchecked
from ....ops.random import gumbel_noise
from ....ops.sample import (
    epsilon_filter,
    eta_filter,
    min_p_filter,
    top_h_filter,
    top_k_filter,
    top_p_filter,
    typical_filter,
)
from ...context import DecodeContext
from ...model.compat import with_cache
from ...output import GenerateBeamOutput, requested_logprobs
from .candidates import LOGPROB_FIELDS, NEVER_PICK, candidate_logprobs, gather_beams


def check_beam_config(config, streamer=None) -> None:
    """Raise ValueError for beam settings that cannot run (before any model step)."""
    num_beams = config.num_beams
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    groups = config.num_beam_groups if config.num_beam_groups is not None else 1
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"num_beam_groups must be an integer >= 1, got {groups!r}")
    if num_beams % groups:
        raise ValueError(f"num_beams must be divisible by num_beam_groups ({groups}), got num_beams={num_beams}")
    diversity = config.diversity_penalty or 0.0
    if isinstance(diversity, bool) or not isinstance(diversity, (int, float)) or not diversity >= 0:
        raise ValueError(f"diversity_penalty must be a number >= 0, got {diversity!r}")
    if diversity > 0 and groups == 1:
        raise ValueError("diversity_penalty only acts between beam groups: set num_beam_groups > 1 "
                         f"(got num_beam_groups={groups})")
    if groups > 1 and config.do_sample:
        raise ValueError("diverse beam search (num_beam_groups > 1) cannot be combined with do_sample=True")
    returned = config.num_return_sequences or 1
    if returned > num_beams:
        raise ValueError(f"num_return_sequences must be an integer in [1, num_beams={num_beams}], got {returned}")
    if config.early_stopping not in (None, True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {config.early_stopping!r}")
    if streamer is not None:
        raise ValueError("a streamer cannot be used with beam search (as in transformers): use num_beams=1")


def run(ctx: DecodeContext):
    """Beam search or beam sampling (diverse beam search is :mod:`.group_beam`); see the module docstring.

    Returns the best ``num_return_sequences`` hypotheses of each prompt (B * R, L) as a LongTensor, or a
    :class:`GenerateBeamOutput` with ``return_dict_in_generate=True``.
    """
    return _BeamSearch(ctx).run()


def warp_for_beams(scores: torch.Tensor, params, min_keep: int) -> torch.Tensor:
    """Beam sampling's warpers on processed log-probs (temperature -> top-H -> top-k -> top-p -> min-p -> typical ->
    epsilon -> eta), each but top-H keeping at least ``min_keep`` tokens as transformers does for beams. Rows with
    temperature 0 stay as they are."""
    t = params.temperature_of(scores)
    out = scores if not isinstance(t, torch.Tensor) and t in (0.0, 1.0) else _divide(scores, t)
    out = top_h_filter(out, params.top_h)
    for fn, value, off in ((top_k_filter, params.top_k, 0), (top_p_filter, params.top_p, 1.0),
                           (min_p_filter, params.min_p, 0.0), (typical_filter, params.typical_p, 1.0)):
        if isinstance(value, torch.Tensor) or value != off:
            out = _keep_top(fn(out, value), out, min_keep)
    out = epsilon_filter(out, params.epsilon_cutoff, min_keep)
    return eta_filter(out, params.eta_cutoff, min_keep)


def _divide(scores, temperature):
    t = temperature if isinstance(temperature, torch.Tensor) else torch.tensor(float(temperature))
    t = t.to(scores.device, torch.float32).reshape(-1, 1)
    return torch.where(t > 0, scores / torch.where(t > 0, t, 1.0), scores)


def _keep_top(filtered: torch.Tensor, before: torch.Tensor, min_keep: int) -> torch.Tensor:
    top = before.topk(min(min_keep, before.shape[-1]), dim=-1).indices
    return filtered.scatter(1, top, before.gather(1, top))


class _BeamSearch:
    """State of one beam search call; tensors are (B, N, ...) unless said otherwise."""

    def __init__(self, ctx: DecodeContext):
        self.ctx = ctx
        config = ctx.config
        self.batch, self.beams = ctx.batch, ctx.expand
        self.prompt_len = ctx.input_ids.shape[1]
        self.max_length = ctx.max_length
        self.device = ctx.input_ids.device
        self.eos = ctx.eos_ids  # (E,) or None
        n_eos = len(self.eos) if self.eos is not None else 0
        self.k = max(2, 1 + n_eos) * self.beams
        self.length_penalty = config.length_penalty if config.length_penalty is not None else 1.0
        self.early_stopping = config.early_stopping if config.early_stopping is not None else False
        self.do_sample = bool(config.do_sample)
        self.min_keep = n_eos + 1 if n_eos else 2
        B, N, L = self.batch, self.beams, self.max_length
        # transformers fills unused positions with `pad or eos[0]` (a pad id of 0 counts as unset), -1 without eos;
        # read once, before the loop
        fill = (ctx.pad_id or int(self.eos[0])) if n_eos else -1
        self.running = torch.full((B * N, L), fill, dtype=torch.long, device=self.device)
        self.running[:, : self.prompt_len] = ctx.input_ids
        self.running_scores = torch.zeros(B, N, device=self.device)
        self.running_scores[:, 1:] = NEVER_PICK  # only beam 0 may start, or all beams would pick the same tokens
        self.top_n, self.logprobs = requested_logprobs(config)
        self.running_hist = self._histories(B, N, L - self.prompt_len)
        self.finished = self.running.view(B, N, L).clone()
        self.finished_scores = torch.full((B, N), NEVER_PICK, device=self.device)
        self.finished_hist = {name: h.clone() for name, h in self.running_hist.items()}
        self.is_finished = torch.zeros(B, N, dtype=torch.bool, device=self.device)
        self.may_improve = torch.ones(B, 1, dtype=torch.bool, device=self.device)
        self.in_top_n = torch.arange(self.k, device=self.device) < N
        self.row_offset = torch.arange(B, device=self.device)[:, None] * N
        on = bool(config.return_dict_in_generate)
        self.keep = {name: [] if on and getattr(config, f"output_{name}") else None
                     for name in ("scores", "logits", "attentions", "hidden_states")}
        # finished prompts may leave the batch (then the beam indices recorded are relative to the computed rows:
        # only the dict output reports them, and it never compacts)
        self.compact = (B > 1 and not on and not ctx.stops.criteria and not ctx.pipeline.logits_processor
                        and ctx.pipeline.watermark is None)
        self.prompts = None  # once prompts were dropped: the original index of each computed prompt
        self.results = None  # and the finished state (:meth:`_finished_state`) of every prompt, filled as they go

    def _histories(self, B: int, N: int, T: int) -> dict:
        """Per generated token of every beam: the row it came from (``beam_indices``) and, when asked for, its raw
        and processed logprobs and top alternatives; these follow the beams as their tokens do."""
        hist = {"from": torch.full((B, N, T), -1, dtype=torch.int32, device=self.device)}
        if self.logprobs:
            hist["logprob"] = torch.zeros(B, N, T, device=self.device)
            hist["processed"] = torch.zeros(B, N, T, device=self.device)
        if self.logprobs and self.top_n:
            hist["top_values"] = torch.zeros(B, N, T, self.top_n, device=self.device)
            hist["top_ids"] = torch.zeros(B, N, T, self.top_n, dtype=torch.long, device=self.device)
        return hist

    def run(self):
        ctx, runner = self.ctx, self.ctx.runner
        outputs = runner.prefill(ctx.input_ids)
        cur_len, step, host_syncs = self.prompt_len, 0, 0
        while True:
            self._record(outputs)
            sources, tokens, hits = self._step(outputs.logits[:, -1, :], cur_len, step)
            # the running beams now continue rows `sources`: move the cache and the token counts along
            runner.cache.reorder_cache(sources)
            ctx.pipeline.reorder(sources)
            ctx.pipeline.record(tokens)
            cur_len, step = cur_len + 1, step + 1
            host_syncs += 1
            if cur_len >= self.max_length:
                break
            go_on, done = self._progress(cur_len, hits)
            if not go_on:
                break
            if any(done):
                tokens = self._drop_prompts(torch.tensor(done, device=self.device), tokens, outputs.logits.shape[-1])
            outputs = runner.step(tokens)
        return self._finish(host_syncs)

    def _record(self, outputs) -> None:
        if self.keep["attentions"] is not None:
            self.keep["attentions"].append(outputs.attentions)
        if self.keep["hidden_states"] is not None:
            self.keep["hidden_states"].append(outputs.hidden_states)

    def _candidate_scores(self, raw: torch.Tensor, cur_len: int, step: int):
        """The top-K ``(scores, tokens, beams)`` of the processed log-probs (or of the raw logits when the kernel
        may normalise them itself), and those processed log-probs (None then)."""
        ctx, N = self.ctx, self.beams
        logits = raw.to(dtype=torch.float32, copy=True)
        if self.keep["logits"] is not None:
            self.keep["logits"].append(logits.clone())
        running = self.running_scores.view(-1)
        fused = not (self.do_sample or self.keep["scores"] is not None or ctx.config.renormalize_logits
                     or ctx.pipeline.watermark is not None or ctx.pipeline.any_active(cur_len, logits))
        if fused:
            return (*beam_topk_unchecked(logits, running, N, self.k, True, ctx.backend), None)
        scores = ctx.pipeline.process(torch.log_softmax(logits, dim=-1), self.running[:, :cur_len], cur_len)
        if self.do_sample:
            scores = warp_for_beams(scores, ctx.pipeline.params, self.min_keep)
        if ctx.pipeline.watermark is not None:
            scores = ctx.pipeline.watermark(self.running[:, :cur_len], scores)
        if ctx.config.renormalize_logits:
            scores = scores.log_softmax(dim=-1)
        if self.keep["scores"] is not None:
            self.keep["scores"].append(scores.clone())
        if not self.do_sample:
            return (*beam_topk_unchecked(scores, running, N, self.k, False, ctx.backend), scores)
        # Gumbel-top-k: the K best of (score + Gumbel noise) are K draws without replacement from softmax(score)
        params = ctx.pipeline.params  # the computed rows' (prompts may have left the batch)
        seeds = params.seeds.view(self.batch, N)[:, 0]
        noise = gumbel_noise(seeds, step, N * scores.shape[1]).view_as(scores)
        t = params.temperature
        if isinstance(t, torch.Tensor) or t <= 0:
            noise = noise * (torch.as_tensor(t, device=noise.device).reshape(-1, 1) > 0)
        _, tokens, beams = beam_topk_unchecked(scores + noise, running, N, self.k, False, ctx.backend)
        rows = beams + self.row_offset
        picked = scores[rows, tokens] + running[rows]
        return picked, tokens, beams, scores

    def _step(self, raw: torch.Tensor, cur_len: int, step: int):
        B, N, K, L = self.batch, self.beams, self.k, self.max_length
        scores, tokens, beams, processed = self._candidate_scores(raw, cur_len, step)
        source_rows = (beams + self.row_offset).view(-1)  # (B*K,) global row of each candidate's beam
        cand = self.running.index_select(0, source_rows)
        cand[:, cur_len] = tokens.view(-1)
        new = {"from": (beams + self.row_offset).to(torch.int32)}
        if self.logprobs:
            new.update(candidate_logprobs(torch.log_softmax(raw.float(), dim=-1), processed, source_rows, tokens,
                                          self.top_n))
        cand_hist = {name: _pick_rows(h, source_rows, B, K) for name, h in self.running_hist.items()}
        for name, value in new.items():
            cand_hist[name][:, :, cur_len - self.prompt_len] = value
        hits = self._hits(cand, tokens, cur_len)

        # the N best candidates that did not stop keep running
        alive_scores = scores + hits.to(torch.float32) * NEVER_PICK
        keep = torch.topk(alive_scores, k=N)[1]
        self.running_scores = alive_scores.gather(1, keep)
        keep_rows = (keep + self.row_offset * (K // N)).view(-1)
        self.running = cand.index_select(0, keep_rows)
        self.running_hist = {name: gather_beams(h, keep) for name, h in cand_hist.items()}

        # candidates in the top N that stopped may enter the finished set
        length = (cur_len + 1 - self.prompt_len) ** self.length_penalty
        finals = scores / length
        full = torch.all(self.is_finished, dim=-1, keepdim=True) & (self.early_stopping is True)
        finals = finals + full.to(torch.float32) * NEVER_PICK
        finals = finals + (~self.may_improve).to(torch.float32) * NEVER_PICK
        just_finished = hits & self.in_top_n[None, :]
        finals = finals + (~just_finished) * NEVER_PICK
        merged_scores = torch.cat((self.finished_scores, finals), dim=1)
        best = torch.topk(merged_scores, k=N)[1]
        self.finished_scores = merged_scores.gather(1, best)
        self.is_finished = torch.cat((self.is_finished, just_finished), dim=1).gather(1, best)
        merged = torch.cat((self.finished, cand.view(B, K, L)), dim=1)
        self.finished = merged.gather(1, best[:, :, None].expand(-1, -1, L))
        self.finished_hist = {name: gather_beams(torch.cat((self.finished_hist[name], h), dim=1), best)
                              for name, h in cand_hist.items()}

        sources = self.running_hist["from"][:, :, cur_len - self.prompt_len].reshape(-1).long()
        return sources, self.running[:, cur_len], hits

    def _hits(self, cand: torch.Tensor, tokens: torch.Tensor, cur_len: int) -> torch.Tensor:
        """(B, K) bool: the candidate stops (eos, stop strings / custom criteria, length or time limit)."""
        stops = self.ctx.stops
        if cur_len + 1 >= self.max_length or stops.out_of_time():
            return torch.ones_like(tokens, dtype=torch.bool)
        hits = torch.isin(tokens, self.eos) if self.eos is not None else torch.zeros_like(tokens, dtype=torch.bool)
        for criterion in stops.criteria:
            done = criterion(cand[:, : cur_len + 1], None)
            done = torch.full((cand.shape[0],), done) if isinstance(done, bool) else done
            hits = hits | done.to(hits.device).view_as(hits)
        return hits

    def _progress(self, cur_len: int, hits: torch.Tensor) -> tuple[bool, list[bool]]:
        """Update the per-prompt improvement bound; return whether any prompt can still improve and, when finished
        prompts may leave the batch, which ones cannot (both in the one host read per step)."""
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            best_length = self.max_length - self.prompt_len
        else:
            best_length = cur_len - self.prompt_len
        best_possible = self.running_scores[:, :1] / (best_length ** self.length_penalty)
        worst = torch.where(self.is_finished, torch.min(self.finished_scores, dim=1, keepdim=True)[0], NEVER_PICK)
        self.may_improve = self.may_improve & torch.any(best_possible > worst, dim=-1, keepdim=True)
        full = torch.all(self.is_finished, dim=-1) & (self.early_stopping is True)
        if not self.compact:
            return bool(torch.any(self.may_improve) & ~torch.all(full) & ~torch.all(hits)), []
        # a prompt that cannot improve (all N hypotheses finished) or is full with early_stopping=True keeps its
        # hypotheses as they are; once every prompt is so, transformers may run on, but to the same result
        done = ~self.may_improve.view(-1) | full
        flags = torch.cat(((~torch.all(done) & ~torch.all(hits)).view(1), done)).tolist()
        return flags[0], flags[1:]

    def _drop_prompts(self, done: torch.Tensor, tokens: torch.Tensor, vocab: int) -> torch.Tensor:
        """Stop computing the prompts flagged in ``done`` (B,): their results are set aside, and the state, the cache
        and the per-row pipeline keep the other prompts' rows. Returns the kept rows' next tokens."""
        N = self.beams
        keep, gone = (~done).nonzero().squeeze(1), done.nonzero().squeeze(1)
        finished = self._finished_state()
        if self.prompts is None:
            self.prompts = torch.arange(self.batch, device=self.device)
            self.results = [t.clone() for t in finished]
        for result, part in zip(self.results, finished):
            result[self.prompts[gone]] = part[gone]
        self.prompts = self.prompts[keep]
        for name in ("running_scores", "finished", "finished_scores", "is_finished", "may_improve"):
            setattr(self, name, getattr(self, name)[keep])
        for hist in (self.running_hist, self.finished_hist):
            hist.update({name: h[keep] for name, h in hist.items()})
        rows = (keep[:, None] * N + torch.arange(N, device=self.device)).view(-1)
        self.running = self.running[rows]
        self.batch = keep.shape[0]
        self.row_offset = torch.arange(self.batch, device=self.device)[:, None] * N
        self.ctx.runner.select_rows(rows)
        self.ctx.pipeline.prepare(vocab, self.device)
        self.ctx.pipeline.select_rows(rows)
        return tokens[rows]

    def _finish(self, host_syncs: int):
        ctx, R = self.ctx, int(self.ctx.config.num_return_sequences or 1)
        B, L = ctx.batch, self.max_length
        if self.prompts is not None:
            for result, part in zip(self.results, self._finished_state()):
                result[self.prompts] = part
            self.finished, self.finished_scores, *hist = self.results
            self.finished_hist = dict(zip(self.finished_hist, hist))
        sequences = self.finished[:, :R].reshape(B * R, L)
        scores = self.finished_scores[:, :R].reshape(-1)
        hist = {name: h[:, :R].reshape(B * R, *h.shape[2:]) for name, h in self.finished_hist.items()}
        beam_from = hist["from"]
        generated = int((beam_from + 1).bool().sum(dim=1).max())  # read once, after the loop
        sequences = sequences[:, : self.prompt_len + generated]
        if not ctx.config.return_dict_in_generate:
            return sequences
        logprobs = {field: hist[name][:, :generated] for field, name in LOGPROB_FIELDS.items() if name in hist}
        keep = {k: tuple(v) if v is not None else None for k, v in self.keep.items()}
        return GenerateBeamOutput(
            sequences=sequences, sequences_scores=scores if ctx.config.output_scores else None,
            scores=keep["scores"], logits=keep["logits"], beam_indices=beam_from[:, :generated],
            attentions=keep["attentions"], hidden_states=keep["hidden_states"],
            **with_cache(ctx.runner.cache), host_syncs=host_syncs, **logprobs,
        )

    def _finished_state(self) -> list[torch.Tensor]:
        """The per-prompt results: hypotheses, their scores and their histories."""
        return [self.finished, self.finished_scores, *self.finished_hist.values()]


def _pick_rows(history: torch.Tensor, rows: torch.Tensor, batch: int, k: int) -> torch.Tensor:
    """(B, K, T, ...) histories of the beam rows ``rows`` (B*K,) of ``history`` (B, N, T, ...)."""
    return history.reshape(-1, *history.shape[2:]).index_select(0, rows).view(batch, k, *history.shape[2:])
