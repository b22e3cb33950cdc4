"""The decode loop shared by the speculative strategies (assisted decoding, prompt lookup).

Per verification step, for every row still running:

1. the proposer drafts up to K tokens (a draft model, or n-gram matches in the text so far); rows may draft fewer
2. the main model runs ``[pending token, drafts]`` (B, K + 1) in one forward; padded draft slots are masked (when
   no row drafted, the pending tokens alone: a plain one-token step)
3. both models' logits are processed the same way, each position with the history it would have (the row's text
   plus the drafts before it: :mod:`.block_pipeline`), and the ``verify`` op decides per row how many drafts to
   accept and draws the next token (greedy: the argmax; sampling: speculative sampling, which keeps the main model's
   processed distribution exactly)
4. each row appends its accepted drafts and the next token, ended after the first token where plain decoding would
   stop the row (eos, stop strings, stopping criteria: :mod:`pydecode.generation.run_stopping`) and at
   ``max_length``; the KV caches keep the kept slots: rows that kept fewer than the longest row leave holes, masked
   in every later forward, so nothing is recomputed and rows never wait for each other

The prompt's last token is not prefilled: it is the first step's pending token, so the first drafts (proposed from
the prompt) are verified by the forward that also gives the first token, as in transformers' assisted decoding.

A user ``logits_processor`` or opaque stopping criteria take a (B, length) history, so with them every running row
keeps the shortest run of the step and all stay at one length (speculative sampling stays exact: where a run ends
does not depend on the row's own tokens past that point).

Host reads per step: one (what to keep in the caches, how many rows run, how much room is left); prompt lookup adds
one (the widest row's draft count), opaque stopping criteria one (how many tokens to call them on). Row randomness
comes from the sampler's stream: a step with K drafts uses the stream steps ``s .. s + K - 1`` for the draft draws
and ``s + K`` for the verification.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ....ops.sample import sample_from_processed
from ....ops.verify import verify_unchecked
from ...context import DecodeContext
from ...model.compat import with_cache
from ...model.output_head import fast_output_head
from ...model.runner import ModelRunner
from ...model.seq2seq import EncoderDecoderRunner
from ...output import GenerateOutput
from ...run_record import ForwardRecorder, RunRecorder
from ...run_stopping import RunStops
from .block_pipeline import BlockPipeline


@dataclass
class DraftState:
    """What a proposer sees: ``history`` (B, max_length + 1) token ids (the last column is scratch), ``valid``
    (B, max_length) bool (False on prompt padding), ``lengths`` (B,) tokens so far (the pending token included),
    ``pending`` (B,) the last token, not yet in the main model's cache, ``active`` (B,) rows still running, ``room``
    (B,) how many drafts each row may still add, and ``blocks``, the step's logits pipeline."""

    history: torch.Tensor
    valid: torch.Tensor
    lengths: torch.Tensor
    pending: torch.Tensor
    active: torch.Tensor
    room: torch.Tensor
    blocks: BlockPipeline

    def process(self, raw: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Processed scores (B, T, V) of raw logits (B, T, V) whose first position follows ``offset`` drafts (written
        with :meth:`write_drafts`)."""
        return self.blocks.process(raw, self.lengths, offset)

    def write_drafts(self, drafts: torch.Tensor, count: torch.Tensor, offset: int = 0) -> None:
        """Put each row's first ``count[b]`` of ``drafts`` (B, K) in the history as drafts ``offset ..``, where the
        processing of later positions reads them (the loop overwrites them with what the row keeps)."""
        slots = offset + torch.arange(drafts.shape[1], device=drafts.device)
        scratch = self.history.shape[1] - 1
        self.history.scatter_(1, torch.where(slots < count[:, None], self.lengths[:, None] + slots, scratch), drafts)


@dataclass
class Verified:
    """One verification's outcome per row (B,): ``num_draft`` drafts verified, ``accepted`` by the main model,
    ``kept`` (the accepted ones, fewer where the run was cut), ``active`` rows that ran; host values: ``longest``
    (the most cache slots a row keeps: ``kept + 1``) and ``all_accepted`` (every active row accepted every draft)."""

    num_draft: torch.Tensor
    accepted: torch.Tensor
    kept: torch.Tensor
    active: torch.Tensor
    longest: int
    all_accepted: bool


def last_logits(runner: ModelRunner, count: int) -> dict:
    """Forward kwargs asking ``runner``'s model for the logits of the last ``count`` positions only (where it can)."""
    return {"logits_to_keep": count} if "logits_to_keep" in runner.model_kwargs else {}


def check_supported(ctx: DecodeContext) -> None:
    """Raise for what the speculative loop does not run: stopping rows of a batch early with no pad token to fill
    them (plain decoding keeps extending such rows)."""
    if isinstance(ctx.runner, EncoderDecoderRunner) and ctx.input_ids.shape[0] != 1:
        raise NotImplementedError(f"{ctx.strategy} decoding on encoder-decoder models runs one prompt at a time (as "
                                  "in transformers): their decoder positions do not skip the holes of ragged rows")
    if ctx.pad_id is None and ctx.stops.criteria and ctx.input_ids.shape[0] > 1:
        raise NotImplementedError(f"{ctx.strategy} decoding with stop_strings / stopping_criteria and a batch needs "
                                  "a pad_token_id (or an eos_token_id) to pad the rows that stop")
    if ctx.streamer is not None and ctx.input_ids.shape[0] != 1:
        raise ValueError("streamers take one sequence: use batch size 1 with a streamer")


def run_speculative(ctx: DecodeContext, proposer):
    """Decode with ``proposer``: ``begin(input_ids)`` once, ``num_tokens`` (the drafts it wants per step),
    ``propose(state, k, step)`` -> ``(drafts (B, K), num_draft (B,), processed draft logits (B, K, V) or None)`` and
    ``accept(verified: Verified)`` after each verification. Returns the sequences or a :class:`GenerateOutput`."""
    check_supported(ctx)
    params, config = ctx.params, ctx.config
    input_ids, max_length, streamer = ctx.input_ids, ctx.max_length, ctx.streamer
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    fill = 0 if ctx.pad_id is None else ctx.pad_id
    history = torch.full((batch, max_length + 1), fill, dtype=torch.long, device=device)
    history[:, :prompt_len] = input_ids
    valid = torch.ones(batch, max_length, dtype=torch.bool, device=device)
    if ctx.attention_mask is not None:
        valid[:, :prompt_len] = ctx.attention_mask.bool()
    blocks, stops = BlockPipeline(ctx, history), RunStops(ctx, history, fill)
    one_length = blocks.needs_common_length or stops.needs_common_length
    record = RunRecorder(config, batch, max_length - prompt_len, ctx.backend)
    forwards = ForwardRecorder(config, batch, ctx.strategy)
    length = prompt_len  # host copy of lengths[0], for the forward recorder (one row)
    proposer.begin(input_ids)

    # the prompt's last token is the first step's pending token: the first step runs the prompt and the first drafts
    runner, pending, lengths = None, input_ids[:, -1], torch.full((batch,), prompt_len, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    proposed = torch.zeros((), dtype=torch.long, device=device)
    accepted_total, verifications = proposed.clone(), proposed.clone()
    step, host_syncs, running, room_max = 0, 0, batch, max_length - 1 - prompt_len
    while running and not ctx.stops.out_of_time():
        active = ~done
        room = torch.where(active, (max_length - 1 - lengths).clamp(min=0), 0)
        state = DraftState(history, valid, lengths, pending, active, room, blocks)
        k = min(proposer.num_tokens, room_max)
        if k > 0:
            drafts, num_draft, draft_scores = proposer.propose(state, k, step)
        else:
            drafts, num_draft, draft_scores = pending.new_zeros(batch, 0), torch.zeros_like(lengths), None
        width = drafts.shape[1]
        num_draft = torch.minimum(num_draft, room)
        state.write_drafts(drafts, num_draft)
        slots = torch.arange(width + 1, device=device)
        fed = active[:, None] & (slots[None, :] <= num_draft[:, None])
        with fast_output_head(ctx.model, batch * (width + 1)):
            if runner is None:
                runner = _prefill_with_drafts(ctx, drafts, fed[:, 1:])
                outputs, start = runner.prefill(torch.cat([input_ids, drafts], 1), **last_logits(runner, width + 1)), 0
            else:
                outputs, start = runner.forward_block(torch.cat([pending[:, None], drafts], 1), fed), length - 1
            raw = outputs.logits[:, -(width + 1):].float()
        target = blocks.process(raw, lengths)
        if width:
            accepted, next_tokens = verify_unchecked(drafts, draft_scores, target, num_draft, params.temperature,
                                                     params.seeds, step + width, ctx.backend)
        else:  # no row drafted: a plain step of one token per row
            accepted = torch.zeros_like(lengths)
            next_tokens = sample_from_processed(target[:, 0], params.seeds, step, params.temperature)
        step += width + 1

        run = torch.cat([drafts, next_tokens[:, None]], 1).scatter_(1, accepted[:, None], next_tokens[:, None])
        count = torch.where(active, accepted + 1, 0)
        if one_length:  # every running row keeps the step's shortest run
            count = torch.where(active, torch.where(active, count, max_length).min(), 0)
        count, finished = stops.cut(run, count, lengths, target, blocks.common_length)
        blocks.count_tokens(run, count)
        record.add(raw, target, run, lengths - prompt_len, count)
        lengths = lengths + count
        done = done | finished | (lengths >= max_length)
        kept = (count - 1).clamp(min=0)  # drafts kept: the accepted ones, fewer where the run was cut
        pending = torch.where(active, run.gather(1, kept[:, None]).squeeze(1), pending)

        proposed += num_draft.sum()
        accepted_total += accepted.sum()
        verifications += (num_draft > 0).sum()
        next_room = torch.where(done, 0, (max_length - 1 - lengths).clamp(min=0))
        longest, running, room_max, all_accepted = torch.stack([
            count.max(), (~done).sum(), next_room.max(), ((accepted == num_draft) | ~active).all().long(),
        ]).tolist()
        host_syncs += 1
        blocks.common_length += longest  # the running rows' length, when they keep one
        forwards.add(outputs, start, length, longest)
        length += longest
        if streamer is not None:
            streamer.put(history[0, int(lengths[0]) - longest: int(lengths[0])].cpu())
        runner.keep_last(width + 1, count, longest)  # the pending token and the kept drafts stay cached
        if k > 0:
            proposer.accept(Verified(num_draft, accepted, kept, active, longest, bool(all_accepted)))
    if streamer is not None:
        streamer.end()
    if isinstance(runner, EncoderDecoderRunner) and forwards.want["attentions"]:
        runner.cross_attentions = forwards.store["cross_attentions"]  # per token, as the decoder's
    sequences = history[:, : int(lengths.max())]
    if not config.return_dict_in_generate:
        return sequences
    proposed, accepted_total, verifications = (int(x) for x in (proposed, accepted_total, verifications))
    return GenerateOutput(
        sequences=sequences, **record.fields(sequences.shape[1] - prompt_len), **forwards.fields(),
        **with_cache(runner.cache),
        host_syncs=host_syncs + stops.host_reads, acceptance_rate=accepted_total / proposed if proposed else 0.0,
        mean_accepted_tokens=accepted_total / verifications if verifications else 0.0,
    )


def _prefill_with_drafts(ctx: DecodeContext, drafts: torch.Tensor, fed: torch.Tensor) -> ModelRunner:
    """A runner over the call's cache whose prompt is the prompt then ``drafts`` (B, K), ``fed`` (B, K) marking the
    real ones (the others are masked holes), as transformers' assisted decoding runs its first forward."""
    prompt = ctx.attention_mask if ctx.attention_mask is not None else torch.ones_like(ctx.input_ids)
    mask = torch.cat([prompt, fed.to(prompt.dtype)], 1)
    if isinstance(ctx.runner, EncoderDecoderRunner):  # the decoder's prompt then the drafts, over the call's runner
        ctx.runner.set_prompt_mask(mask)
        return ctx.runner
    runner = ModelRunner(ctx.model, attention_mask=mask, batch=mask.shape[0], prompt_len=mask.shape[1],
                         max_length=ctx.max_length, device=ctx.input_ids.device, cache=ctx.runner.cache,
                         model_kwargs=ctx.runner.model_kwargs)
    runner.positional = ctx.runner.positional  # token_type_ids and the like: the drafts get the generated value
    return runner
