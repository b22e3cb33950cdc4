"""The decode loop shared by the speculative strategies (assisted decoding, prompt lookup).

Per verification step, for every row still running:

1. the proposer drafts up to K tokens (a draft model, or n-gram matches in the text so far); rows may draft fewer
2. the main model runs ``[pending token, drafts]`` (B, K + 1) in one forward; padded draft slots are masked
3. both models' logits are processed the same way (the pipeline's token bans, then temperature / top-k / top-p /
   min-p / typical), and the ``verify`` op decides per row how many drafts to accept and draws the next token (greedy:
   the argmax; sampling: speculative sampling, which keeps the main model's processed distribution exactly)
4. each row appends its accepted drafts and the next token (stopping after an eos inside the run, and at
   ``max_length``); the KV caches keep the accepted slots: rows that accepted fewer than the longest row leave holes,
   masked in every later forward, so nothing is recomputed and rows never wait for each other

One host read per step (what to keep in the caches, how many rows run, how much room is left); prompt lookup adds one
(the widest row's draft count). Row randomness comes from the sampler's stream: a step with K drafts uses the stream
steps ``s .. s + K - 1`` for the draft draws and ``s + K`` for the verification.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops.reference.sampling import process_logits, sample_from_processed
from ..ops.verify import verify_unchecked
from .context import DecodeContext
from .output import GenerateOutput


@dataclass
class DraftState:
    """What a proposer sees: ``history`` (B, max_length + 1) token ids (the last column is scratch), ``valid``
    (B, max_length) bool (False on prompt padding), ``lengths`` (B,) tokens so far (the pending token included),
    ``pending`` (B,) the last token, not yet in the main model's cache, ``active`` (B,) rows still running, ``room``
    (B,) how many drafts each row may still add."""

    history: torch.Tensor
    valid: torch.Tensor
    lengths: torch.Tensor
    pending: torch.Tensor
    active: torch.Tensor
    room: torch.Tensor


def check_supported(ctx: DecodeContext) -> None:
    """Raise for what the speculative loop does not run: processing that depends on the text so far (it would have
    to be replayed per draft position and per row length) and per-step outputs other than scores and logits."""
    config, params = ctx.config, ctx.params
    history_dependent = {
        "repetition / frequency / presence penalties": params.has_penalties,
        "no_repeat_ngram_size": bool(config.no_repeat_ngram_size),
        "multi-token bad_words_ids": any(len(w) > 1 for w in (config.bad_words_ids or [])),
        "min_length / min_new_tokens": bool(config.min_length) or bool(config.min_new_tokens),
        "forced_eos_token_id": config.forced_eos_token_id is not None,
        "logits_processor": bool(ctx.pipeline.logits_processor),
        "stop_strings / stopping_criteria": bool(ctx.stops.criteria),
        "output_attentions / output_hidden_states": bool(config.return_dict_in_generate) and bool(
            config.output_attentions or config.output_hidden_states),
        "output_logprobs / top_logprobs": bool(getattr(config, "output_logprobs", False))
        or bool(getattr(config, "top_logprobs", 0)),
    }
    for name, used in history_dependent.items():
        if used:
            raise NotImplementedError(f"pydecode does not support {name} with {ctx.strategy} decoding yet")
    if ctx.streamer is not None and ctx.input_ids.shape[0] != 1:
        raise ValueError("streamers take one sequence: use batch size 1 with a streamer")


def process(ctx: DecodeContext, logits: torch.Tensor) -> torch.Tensor:
    """Processed float32 scores of raw logits (B, T, V) or (B, V): the pipeline's (history-free) bans, then the
    warpers of each row (greedy rows stay as they are: their draw is the argmax)."""
    shape = logits.shape
    flat = logits.reshape(-1, shape[-1]).to(torch.float32, copy=True)
    flat = ctx.pipeline.process(flat, None, ctx.pipeline.prompt_len)  # cur_len only gates eos bans, rejected above
    p = ctx.pipeline.params
    if p.do_sample:
        per = flat.shape[0] // shape[0]
        rep = (lambda v: v.repeat_interleave(per)) if per > 1 else (lambda v: v)
        flat = process_logits(flat, *[rep(v) if isinstance(v, torch.Tensor) else v
                                      for v in (p.temperature, p.top_k, p.top_p, p.min_p, p.typical_p)])
    return flat.reshape(shape)


def run_speculative(ctx: DecodeContext, proposer):
    """Decode with ``proposer``: ``prefill(input_ids)``, ``num_tokens`` (the drafts it wants per step),
    ``propose(state, k, step)`` -> ``(drafts (B, K), num_draft (B,), processed draft logits (B, K, V) or None)`` and
    ``accept(accepted, active, longest, all_accepted)`` after each verification. Returns the sequences or a
    :class:`GenerateOutput`."""
    check_supported(ctx)
    runner, params, config = ctx.runner, ctx.params, ctx.config
    input_ids, max_length, streamer = ctx.input_ids, ctx.max_length, ctx.streamer
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    history = torch.full((batch, max_length + 1), 0 if ctx.pad_id is None else ctx.pad_id, dtype=torch.long,
                         device=device)
    history[:, :prompt_len] = input_ids
    valid = torch.ones(batch, max_length, dtype=torch.bool, device=device)
    if ctx.attention_mask is not None:
        valid[:, :prompt_len] = ctx.attention_mask.bool()
    eos = torch.tensor(ctx.eos_ids, device=device) if ctx.eos_ids else None
    record = _Record(config, batch, max_length - prompt_len, device)

    raw = runner.prefill(input_ids).logits[:, -1:].float()
    proposer.prefill(input_ids)
    scores = process(ctx, raw)
    pending = sample_from_processed(scores[:, 0], params.seeds, 0, params.temperature)  # the sampler's first draw
    history[:, prompt_len] = pending
    record.add(raw, scores, torch.zeros(batch, dtype=torch.long, device=device), torch.ones_like(pending))
    lengths = torch.full((batch,), prompt_len + 1, dtype=torch.long, device=device)
    done = torch.isin(pending, eos) if eos is not None else torch.zeros(batch, dtype=torch.bool, device=device)
    done |= lengths >= max_length
    if streamer is not None:
        streamer.put(pending.cpu())
    proposed = torch.zeros((), dtype=torch.long, device=device)
    accepted_total, verifications = proposed.clone(), proposed.clone()

    step, host_syncs = 1, 1
    running, room_max = torch.stack([(~done).sum(), (max_length - 1 - lengths).clamp(min=0).max()]).tolist()
    while running and not ctx.stops.out_of_time():
        active = ~done
        room = torch.where(active, (max_length - 1 - lengths).clamp(min=0), 0)
        state = DraftState(history, valid, lengths, pending, active, room)
        k = min(proposer.num_tokens, room_max)
        if k > 0:
            drafts, num_draft, draft_scores = proposer.propose(state, k, step)
        if k == 0 or drafts.shape[1] == 0:  # nothing to verify: a plain step with one padded draft slot
            drafts, draft_scores = torch.zeros(batch, 1, dtype=torch.long, device=device), None
            num_draft = torch.zeros(batch, dtype=torch.long, device=device)
        width = drafts.shape[1]
        num_draft = torch.minimum(num_draft, room)
        slots = torch.arange(width + 1, device=device)
        fed = active[:, None] & (slots[None, :] <= num_draft[:, None])
        raw = runner.forward_block(torch.cat([pending[:, None], drafts], 1), fed).logits.float()
        target = process(ctx, raw)
        accepted, next_tokens = verify_unchecked(drafts, draft_scores, target, num_draft, params.temperature,
                                                 params.seeds, step + width, ctx.backend)
        step += width + 1

        run = torch.cat([drafts, drafts[:, :1]], 1).scatter_(1, accepted[:, None], next_tokens[:, None])
        count = torch.where(active, accepted + 1, 0)
        finished = torch.zeros_like(done)
        if eos is not None:  # an eos inside the accepted run ends the row there
            is_eos = torch.isin(run, eos) & (slots[None, :] < count[:, None])
            finished = is_eos.any(1)
            count = torch.where(finished, is_eos.int().argmax(1) + 1, count)
        written = slots[None, :] < count[:, None]
        history.scatter_(1, torch.where(written, lengths[:, None] + slots, max_length), run)
        record.add(raw, target, lengths - prompt_len, count)
        lengths = lengths + count
        done = done | finished | (lengths >= max_length)
        pending = next_tokens

        proposed += num_draft.sum()
        accepted_total += accepted.sum()
        verifications += active.sum()
        keep = torch.where(active, accepted + 1, 0)  # the pending token and the accepted drafts stay cached
        next_room = torch.where(done, 0, (max_length - 1 - lengths).clamp(min=0))
        longest, running, room_max, all_accepted, emitted = torch.stack([
            keep.max(), (~done).sum(), next_room.max(), ((accepted == num_draft) | ~active).all().long(), count.max(),
        ]).tolist()
        host_syncs += 1
        if streamer is not None:
            streamer.put(history[0, int(lengths[0]) - emitted: int(lengths[0])].cpu())
        runner.keep_last(width + 1, keep, longest)
        if k > 0:
            proposer.accept(accepted, active, longest, bool(all_accepted))
    if streamer is not None:
        streamer.end()
    sequences = history[:, : int(lengths.max())]
    if not config.return_dict_in_generate:
        return sequences
    proposed, accepted_total, verifications = (int(x) for x in (proposed, accepted_total, verifications))
    return GenerateOutput(
        sequences=sequences, scores=record.tuple("scores", sequences.shape[1] - prompt_len),
        logits=record.tuple("logits", sequences.shape[1] - prompt_len), past_key_values=runner.cache,
        host_syncs=host_syncs, acceptance_rate=accepted_total / proposed if proposed else 0.0,
        mean_accepted_tokens=accepted_total / verifications if verifications else 0.0,
    )


class _Record:
    """Per emitted token: the processed scores and raw logits, when ``return_dict_in_generate`` asks for them."""

    def __init__(self, config, batch: int, new_tokens: int, device):
        on = bool(config.return_dict_in_generate)
        self.renormalize = bool(config.renormalize_logits)
        self.buffers = {name: None for name, want in (("scores", on and config.output_scores),
                                                      ("logits", on and config.output_logits)) if want}
        self.batch, self.new_tokens, self.device = batch, new_tokens, device

    def add(self, raw: torch.Tensor, processed: torch.Tensor, offset: torch.Tensor, count: torch.Tensor) -> None:
        """Store positions ``j < count[b]`` of (B, T, V) ``raw`` / ``processed`` as tokens ``offset[b] + j``."""
        for name in self.buffers:
            values = raw if name == "logits" else (processed.log_softmax(-1) if self.renormalize else processed)
            if self.buffers[name] is None:
                self.buffers[name] = values.new_zeros(self.batch, self.new_tokens + 1, values.shape[-1])
            slots = torch.arange(values.shape[1], device=self.device)
            index = torch.where(slots[None, :] < count[:, None], offset[:, None] + slots, self.new_tokens)
            self.buffers[name].scatter_(1, index[..., None].expand_as(values), values)

    def tuple(self, name: str, length: int):
        buffer = self.buffers.get(name)
        return None if buffer is None else tuple(buffer[:, t] for t in range(length))
