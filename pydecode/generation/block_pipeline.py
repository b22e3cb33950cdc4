"""The logits pipeline over a block of positions per row, for the speculative strategies' drafts and verification.

Block position ``j`` of row ``b`` predicts the token at index ``h = lengths[b] + offset + j`` of the row's history.
The history holds the row's tokens, then this step's drafts (written from ``lengths[b]`` on), so each position sees
the text plain decoding would see at length ``h``. The steps are :class:`~.logits.LogitsPipeline`'s, in its order
and on its per-row state, with the history-dependent ones evaluated per position:

0. ``sequence_bias`` and ``encoder_repetition_penalty`` (:mod:`.extra_processors`, as the others marked *)
1. penalties, counting the row's generated tokens plus the drafts before the position
2. ``no_repeat_ngram_size``, ``encoder_no_repeat_ngram_size`` * and ``bad_words_ids`` bans from the history up to
   the position
3. the steps gated by ``h`` (``min_length`` / ``min_new_tokens``, ``prefix_allowed_tokens_fn``,
   ``forced_bos_token_id``, ``forced_eos_token_id``),
   ``remove_invalid_values``, ``exponential_decay_length_penalty`` *, ``suppress_tokens``,
   ``begin_suppress_tokens`` *
4. the user's ``logits_processor``, once per position with the history up to it, as transformers' assisted decoding
   calls it; its (B, h) history needs every running row at one length, ``common_length``, which the loop keeps
5. sampling rows only: temperature, top-H, top-k, top-p, min-p, typical, epsilon, eta

All positions of all rows are processed together; nothing is read back to the host.
"""
from __future__ import annotations

import torch

from ..ops.penalties import penalties_unchecked
from ..ops.reference.constraints import history_tail, ngram_completions
from ..ops.reference.sampling import process_logits

_NEG_INF = float("-inf")


class BlockPipeline:
    """Processes (B, T, V) raw logits against ``history`` (B, max_length + 1), whose last column is scratch."""

    def __init__(self, ctx, history: torch.Tensor):
        self.pipeline, self.config, self.history = ctx.pipeline, ctx.config, history
        self.max_length = ctx.max_length
        self.common_length = ctx.input_ids.shape[1]  # host copy of the running rows' length, for step 4 only

    @property
    def needs_common_length(self) -> bool:
        """True when a user ``logits_processor`` is set: running rows must then keep one length."""
        return bool(self.pipeline.logits_processor)

    def process(self, raw: torch.Tensor, lengths: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """float32 processed scores (B, T, V) of raw logits (B, T, V); ``lengths`` (B,) tokens per row before the
        drafts, ``offset`` drafts before the block's first position."""
        batch, width, vocab = raw.shape
        pipeline, config = self.pipeline, self.config
        pipeline.prepare(vocab, raw.device)
        scores = raw.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        at = lengths[:, None] + offset + torch.arange(width, device=raw.device)  # (B, T): h of each position
        extra = pipeline.extra if pipeline.extra.active else None
        if extra is not None:
            scores = extra.before_penalties(scores, self.history, at).contiguous()
        if pipeline.token_counts is not None:
            self._penalize(scores.view(batch * width, vocab), lengths, offset, width)
        if config.no_repeat_ngram_size:
            scores.masked_fill_(self._ngram_banned(at, config.no_repeat_ngram_size, vocab), _NEG_INF)
        if extra is not None and (banned := extra.encoder_ngram_banned(self.history, at, vocab)) is not None:
            scores.masked_fill_(banned, _NEG_INF)
        if pipeline.bad_words:
            scores.masked_fill_(self._bad_words_banned(at, vocab), _NEG_INF)
        if pipeline.word_ban is not None:
            scores.masked_fill_(pipeline.word_ban, _NEG_INF)
        self._length_gated(scores, at)
        if config.remove_invalid_values:
            scores = torch.nan_to_num(scores, nan=0.0, posinf=torch.finfo(scores.dtype).max,
                                      neginf=torch.finfo(scores.dtype).min)
        if extra is not None:
            scores = extra.decay_eos(scores, at)
        if pipeline.suppress_ban is not None:
            scores.masked_fill_(pipeline.suppress_ban, _NEG_INF)
        if extra is not None:
            scores = extra.suppress_at_begin(scores, at)
        if pipeline.logits_processor:
            start = self.common_length + offset
            scores = torch.stack([pipeline.logits_processor(self.history[:, : start + j], scores[:, j].contiguous())
                                  for j in range(width)], 1)
        return self._warp(scores)

    def count_tokens(self, run: torch.Tensor, count: torch.Tensor) -> None:
        """Count each row's kept tokens ``run[b, :count[b]]`` (B, T) for the penalties."""
        counts = self.pipeline.token_counts
        if counts is not None:
            kept = torch.arange(run.shape[1], device=run.device) < count[:, None]
            counts.scatter_add_(1, run, kept.to(counts.dtype))

    def _penalize(self, scores: torch.Tensor, lengths: torch.Tensor, offset: int, width: int) -> None:
        """Penalties on (B * T, V) ``scores`` in place, position j counting the drafts before it."""
        pipeline, p = self.pipeline, self.pipeline.params
        counts = pipeline.token_counts
        batch, vocab = counts.shape
        drafts = offset + width - 1  # drafts in the history of the block's last position
        if drafts == 0:
            block = counts
        else:
            draft = torch.arange(drafts, device=counts.device)
            tokens = self.history.gather(1, (lengths[:, None] + draft).clamp(max=self.max_length))
            first = (draft - offset + 1).clamp(min=0)  # the first position whose history holds draft i
            added = torch.zeros(batch, width, vocab, dtype=counts.dtype, device=counts.device)
            added.view(batch, -1).scatter_add_(1, first * vocab + tokens, torch.ones_like(tokens, dtype=counts.dtype))
            block = (counts[:, None] + added.cumsum(1, dtype=counts.dtype)).view(batch * width, vocab)
        prompt_mask = pipeline.prompt_mask
        if prompt_mask is not None and width > 1:
            prompt_mask = prompt_mask.repeat_interleave(width, 0)
        rows = _repeat_rows(width)
        penalties_unchecked(scores, block, prompt_mask, rows(p.repetition_penalty), rows(p.frequency_penalty),
                            rows(p.presence_penalty), pipeline.backend)

    def _ngram_banned(self, at: torch.Tensor, n: int, vocab: int) -> torch.Tensor:
        """(B, T, V) bool: tokens completing an n-gram already in the history up to each position."""
        grams = self.history[:, : self.max_length].unfold(1, n, 1)  # (B, G, n) every n-gram of the buffer
        inside = torch.arange(grams.shape[1], device=at.device) <= (at - n)[..., None]  # n-grams inside the history
        return ngram_completions(grams, history_tail(self.history, at, n - 1), vocab, inside)

    def _bad_words_banned(self, at: torch.Tensor, vocab: int) -> torch.Tensor:
        """(B, T, V) bool: last tokens of the bad words whose other tokens end the history at each position."""
        batch, width = at.shape
        banned = torch.zeros(batch, width, vocab, dtype=torch.bool, device=at.device)
        for prefix, last in self.pipeline.bad_words:
            n = prefix.shape[0]
            banned[..., last] |= (history_tail(self.history, at, n) == prefix).all(-1) & (at >= n)
        return banned

    def _length_gated(self, scores: torch.Tensor, at: torch.Tensor) -> None:
        """The eos ban below the minimum length and the forced tokens, at the positions whose ``h`` calls for them."""
        pipeline, config = self.pipeline, self.config
        eos = pipeline.eos_ids
        if eos is not None and (config.min_length or config.min_new_tokens):
            ban = (at < (config.min_length or 0)) | (at - pipeline.prompt_len < (config.min_new_tokens or 0))
            scores[..., eos] = scores[..., eos].masked_fill(ban[..., None], _NEG_INF)
        if pipeline.constraint is not None:
            scores.copy_(pipeline.constraint(scores, self.history, at))
        for token, forced_at in ((config.forced_bos_token_id, 1), (config.forced_eos_token_id, self.max_length - 1)):
            if token is None:
                continue
            only = torch.full(scores.shape[-1:], _NEG_INF, device=scores.device)
            only[[token] if isinstance(token, int) else list(token)] = 0.0
            scores.copy_(torch.where((at == forced_at)[..., None], only, scores))

    def _warp(self, scores: torch.Tensor) -> torch.Tensor:
        p = self.pipeline.params
        if not p.do_sample:  # greedy rows draw the argmax of the processed scores
            return scores
        batch, width, vocab = scores.shape
        rows = _repeat_rows(width)
        flat = scores.reshape(-1, vocab)
        warped = process_logits(flat, p.temperature_of(flat, width),
                                *[rows(v) for v in (p.top_k, p.top_p, p.min_p, p.typical_p)],
                                **{name: rows(v) for name, v in p.cutoffs.items()})
        return warped.view(batch, width, vocab)


def _repeat_rows(width: int):
    """Per-row parameters (scalars or (B,) tensors) for B * width flattened positions."""
    return lambda v: v.repeat_interleave(width) if isinstance(v, torch.Tensor) and width > 1 else v
