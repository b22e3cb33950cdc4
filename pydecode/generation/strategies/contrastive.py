"""Contrastive search (Su et al. 2022, arXiv 2202.06417) with transformers 4.x semantics, batched.

Per step, for every row:

1. the logits pipeline (penalties, bans, min-length, the user's processors) -> softmax -> the top_k candidates
2. one forward over the B x top_k candidates (:meth:`ModelRunner.step_candidates`: the history is not copied)
3. the ``degeneration_score`` op: ``(1 - alpha) * p - alpha * max cos(candidate, context)`` -> the chosen candidate
4. keep its KV-cache entry, its logits (the next step's) and its normalised last hidden state, appended as one new
   row of the context buffer (preallocated (B, max_length, H); padded prompt positions are masked out)

The only host read per step is the stopping check, as in :mod:`.sample`.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from ...ops.degeneration import degeneration_score_unchecked, normalize_rows
from ..context import DecodeContext
from ..model.grouped_attention import grouped_attention
from ..state import DecodeState
from ..step_record import StepRecorder


def check_contrastive_args(config) -> None:
    """Raise ValueError for a ``penalty_alpha`` outside [0, 1], or ``penalty_alpha > 0`` with ``top_k < 1``."""
    alpha = config.penalty_alpha
    if alpha is None:
        return
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or math.isnan(alpha) or not 0 <= alpha <= 1:
        raise ValueError(f"penalty_alpha must be a number in [0, 1], got {alpha!r}")
    top_k = config.top_k
    if alpha > 0 and not config.do_sample and isinstance(top_k, int) and top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1 for contrastive search (penalty_alpha > 0), got {top_k!r}")


def asks_for_contrastive(config) -> bool:
    """Whether the config selects contrastive search (``penalty_alpha > 0`` with more than one candidate)."""
    return config.penalty_alpha is not None and config.penalty_alpha > 0 and (config.top_k or 0) > 1


def run(ctx: DecodeContext):
    """Decode with contrastive search; returns a LongTensor (B, L) or a :class:`GenerateOutput`.

    With ``do_sample=True`` transformers samples and ignores ``penalty_alpha``: the strategy choice sends such calls
    to sampling.
    """
    with grouped_attention(ctx.model):  # the K candidates' forward reads grouped key/value heads in place
        return _search(ctx)


def _search(ctx: DecodeContext):
    config = ctx.config
    alpha, top_k = float(config.penalty_alpha), int(config.top_k)
    runner, pipeline, input_ids, max_length = ctx.runner, ctx.pipeline, ctx.input_ids, ctx.max_length
    rows, prompt_len = input_ids.shape
    device = input_ids.device
    state = DecodeState(ctx)
    record = StepRecorder(config)
    forward_kwargs = {"output_hidden_states": True, "output_attentions": record.attentions}
    row_ids = torch.arange(rows, device=device)

    outputs = runner.prefill(input_ids, **forward_kwargs)
    last_hidden = _hidden_states(outputs)[-1]
    vocab = outputs.logits.shape[-1]
    if top_k > vocab:
        raise ValueError(f"top_k must be an integer in [1, {vocab}] (the vocabulary's size) for contrastive search, "
                         f"got {top_k}")
    context = last_hidden.new_empty(rows, max_length, last_hidden.shape[-1])
    context[:, :prompt_len] = normalize_rows(last_hidden)
    context_mask = None
    if runner.mask is not None:
        context_mask = torch.ones(rows, max_length, dtype=torch.bool, device=device)
        context_mask[:, :prompt_len] = ctx.attention_mask.bool()
    logits = outputs.logits[:, -1, :].to(dtype=torch.float32, copy=True)
    while True:
        cur_len = state.cur_len
        scores = pipeline.process(logits.clone() if record.keeps_raw else logits, state.past(), cur_len)
        top_probs, top_ids = scores.softmax(dim=-1).topk(top_k, dim=-1)
        step = runner.step_candidates(top_ids, **forward_kwargs)
        hidden = [step.rows(h) for h in _hidden_states(step.outputs)]  # each (B, K, H)
        mask = None if context_mask is None else context_mask[:, :cur_len]
        best, _ = degeneration_score_unchecked(hidden[-1], context[:, :cur_len], mask, top_probs, alpha, False,
                                               pipeline.backend)
        tokens = top_ids[row_ids, best]
        runner.keep_candidate(step, best)
        context[:, cur_len] = normalize_rows(hidden[-1][row_ids, best])
        processed = scores.log_softmax(dim=-1) if config.renormalize_logits else scores
        live = state.unfinished
        tokens = state.append(tokens, scores)
        record.add(outputs, logits, scores, processed, tokens, pipeline.backend, live=live)
        outputs = _chosen_outputs(step, hidden, best, row_ids, record)
        logits = step.rows(step.outputs.logits)[row_ids, best].float()
        if state.done():
            break
    if config.return_dict_in_generate:
        runner.cache.crop(-1)  # the last chosen token's entry: the cache then holds what greedy's would
    return state.finish(record)


def _hidden_states(outputs):
    """The (decoder) hidden states of a forward: ``decoder_hidden_states`` on a raw encoder-decoder output."""
    hidden = getattr(outputs, "hidden_states", None)
    return hidden if hidden is not None else outputs.decoder_hidden_states


def _chosen_outputs(step, hidden, best, row_ids, record):
    """The chosen candidates' hidden states (each (B, 1, H)) and attentions, as a one-token forward returns them."""
    hidden_states = tuple(h[row_ids, best][:, None] for h in hidden) if record.hidden_states else None
    attentions = None
    if record.attentions:
        attentions = tuple(_chosen_attention(step, a, best, row_ids) for a in step.outputs.attentions)
    return SimpleNamespace(hidden_states=hidden_states, attentions=attentions)


def _chosen_attention(step, attention, best, row_ids):
    """(B, heads, 1, past + 1) attention weights of the chosen candidates."""
    if not step.in_query:
        return attention.reshape(step.batch, step.k, *attention.shape[1:])[row_ids, best]  # (B*K, heads, 1, ...)
    weights = attention[row_ids, :, best]  # (B, heads, past + K)
    own = weights.gather(2, (step.past + best).view(-1, 1, 1).expand(-1, weights.shape[1], 1))
    return torch.cat([weights[:, :, : step.past], own], dim=2)[:, :, None]
