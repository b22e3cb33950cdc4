"""Greedy decoding and multinomial sampling: one loop, rows may mix both (temperature 0 = greedy row)."""
from __future__ import annotations

import torch

from ..ops.logprobs import token_logprobs_unchecked
from .compat import with_cache
from .context import DecodeContext
from .output import GenerateOutput, requested_logprobs
from .state import DecodeState


def run(ctx: DecodeContext):
    """Decode until every row has finished or ``ctx.max_length`` tokens are reached.

    Per step: model -> logits pipeline -> token -> append (finished rows get ``pad_id``) -> stopping update. Logprobs
    come from the sampling kernel itself unless the processed scores are recorded too. The only host read per step is
    the count of unfinished rows, and only when a row can finish early (eos, stop strings, custom criteria). Once at
    most half the computed rows are unfinished, the finished ones are dropped from the batch (unless per-step outputs
    are recorded). Returns a LongTensor (B, L) or a :class:`GenerateOutput`.
    """
    runner, pipeline = ctx.runner, ctx.pipeline
    state = DecodeState(ctx)
    record = StepRecorder(ctx.config)
    fused_logprobs = record.logprobs and not record.scores and pipeline.watermark is None
    # a watermark processor may keep per-row state (SynthID does): the batch then keeps its rows
    compact = not record.per_step and hasattr(runner.cache, "batch_select_indices") and pipeline.watermark is None

    outputs = runner.prefill(ctx.input_ids)
    while True:
        logits = outputs.logits[:, -1, :].to(dtype=torch.float32, copy=True)
        scores = pipeline.process(logits.clone() if record.keeps_raw else logits, state.past(), state.cur_len)
        if fused_logprobs:
            # the kernel's input logprob is the raw one unless the pipeline changed the logits this step
            raw_is_input = not pipeline.any_active(state.cur_len, scores)
            tokens, input_logprob, processed_logprob = pipeline.select_with_logprobs(scores, state.step)
            drawn = (input_logprob if raw_is_input else None, processed_logprob)
            processed = None
        else:
            tokens, processed = pipeline.select(scores, state.step, record.scores or record.logprobs, state.past())
            drawn = None
        live = state.unfinished
        tokens = state.append(tokens, scores)
        record.add(outputs, logits, scores, processed, tokens, pipeline.backend, drawn, live)
        if state.done():
            break
        if compact and state.left <= state.unfinished.shape[0] // 2:
            # finished rows stop costing compute: drop them from the batch, the cache and the per-row state
            keep = state.drop_finished()
            runner.select_rows(keep)
            pipeline.select_rows(keep)
            tokens = tokens[keep]
        outputs = runner.step(tokens)
    return state.finish(record)


class StepRecorder:
    """Collects what ``return_dict_in_generate`` asks for, step by step."""

    def __init__(self, config):
        on = bool(config.return_dict_in_generate)
        self.scores = on and bool(config.output_scores)
        self.logits = on and bool(config.output_logits)
        self.attentions = on and bool(config.output_attentions)
        self.hidden_states = on and bool(config.output_hidden_states)
        self.top_n, self.logprobs = requested_logprobs(config)
        self.processed_logprobs = self.logprobs
        self.keeps_raw = self.logits or self.logprobs
        self.per_step = self.scores or self.keeps_raw or self.attentions or self.hidden_states
        self.store = {k: [] for k in ("scores", "logits", "attentions", "hidden_states", "logprobs", "processed",
                                      "top_values", "top_ids")}

    def add(self, outputs, logits, scores, processed, tokens, backend, drawn=None, live=None) -> None:
        """Record one step. ``drawn``: the sampler's ``(raw logprob or None, processed logprob)`` of the tokens, when
        it computed them (else they come from ``logits`` and ``processed``); ``live``: (B,) bool, the rows still
        unfinished before this token (the others' logprobs are recorded as 0)."""
        if self.scores:
            self.store["scores"].append(processed)
        if self.logits:
            self.store["logits"].append(logits)
        if self.attentions:
            self.store["attentions"].append(outputs.attentions)
        if self.hidden_states:
            self.store["hidden_states"].append(outputs.hidden_states)
        if self.logprobs:
            chosen, processed_logprob = drawn if drawn is not None else (None, None)
            if chosen is None or self.top_n:
                chosen, top_values, top_ids = token_logprobs_unchecked(logits, tokens, self.top_n, backend)
                self.store["top_values"].append(top_values)
                self.store["top_ids"].append(top_ids)
            if processed_logprob is None:
                processed_logprob = token_logprobs_unchecked(processed, tokens, 0, backend)[0]
            if live is not None:
                chosen, processed_logprob = (torch.where(live, x, 0.0) for x in (chosen, processed_logprob))
                if self.top_n:
                    self.store["top_values"][-1] = self.store["top_values"][-1].masked_fill(~live[:, None], 0.0)
                    self.store["top_ids"][-1] = self.store["top_ids"][-1].masked_fill(~live[:, None], 0)
            self.store["logprobs"].append(chosen)
            self.store["processed"].append(processed_logprob)

    def finish(self, sequences, cache, host_syncs) -> GenerateOutput:
        s = self.store
        stack = (lambda xs: torch.stack(xs, dim=1)) if self.logprobs else (lambda xs: None)
        return GenerateOutput(
            sequences=sequences,
            scores=tuple(s["scores"]) if self.scores else None,
            logits=tuple(s["logits"]) if self.logits else None,
            attentions=tuple(s["attentions"]) if self.attentions else None,
            hidden_states=tuple(s["hidden_states"]) if self.hidden_states else None,
            **with_cache(cache),
            logprobs=stack(s["logprobs"]),
            processed_logprobs=stack(s["processed"]),
            top_logprobs=stack(s["top_values"]) if self.top_n else None,
            top_logprob_ids=stack(s["top_ids"]) if self.top_n else None,
            host_syncs=host_syncs,
        )
