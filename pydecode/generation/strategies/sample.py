"""Greedy decoding and multinomial sampling: one loop, rows may mix both (temperature 0 = greedy row)."""
from __future__ import annotations

import torch

from ..context import DecodeContext
from ..state import DecodeState
from ..step_record import StepRecorder


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
