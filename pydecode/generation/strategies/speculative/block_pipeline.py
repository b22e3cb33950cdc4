"""The logits pipeline over a block of positions per row, for the speculative strategies' drafts and verification.

Block position ``j`` of row ``b`` predicts the token at index ``h = lengths[b] + offset + j`` of the row's history.
The history holds the row's tokens, then this step's drafts (written from ``lengths[b]`` on), so each position sees
the text plain decoding would see at length ``h``. The processors are the call's one list (:mod:`.processors`, in
its order, on the :class:`~.logits.LogitsPipeline`'s per-row state), each evaluated per position: the penalties
count the drafts before the position, the history bans and the length-gated steps read the history up to it, and
the user's ``logits_processor`` runs once per position as transformers' assisted decoding calls it (its (B, h)
history needs every running row at one length, ``common_length``, which the loop keeps). Then, on sampling rows
only, the warpers: temperature, top-H, top-k, top-p, min-p, typical, epsilon, eta.

All positions of all rows are processed together; nothing is read back to the host.
"""
from __future__ import annotations

import torch

from ...logits.pipeline import warp
from ...logits.processors import StepView


class BlockPipeline:
    """Processes (B, T, V) raw logits against ``history`` (B, max_length + 1), whose last column is scratch."""

    def __init__(self, ctx, history: torch.Tensor):
        self.pipeline, self.history = ctx.pipeline, history
        self.common_length = ctx.input_ids.shape[1]  # host copy of the running rows' length, for the user's processors

    @property
    def needs_common_length(self) -> bool:
        """True when a user ``logits_processor`` is set: running rows must then keep one length."""
        return bool(self.pipeline.logits_processor)

    def process(self, raw: torch.Tensor, lengths: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """float32 processed scores (B, T, V) of raw logits (B, T, V); ``lengths`` (B,) tokens per row before the
        drafts, ``offset`` drafts before the block's first position."""
        width = raw.shape[1]
        pipeline = self.pipeline
        pipeline.prepare(raw.shape[-1], raw.device)
        scores = raw.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
        at = lengths[:, None] + offset + torch.arange(width, device=raw.device)  # (B, T): h of each position
        view = StepView(self.history, at, lengths, offset, common_length=self.common_length)
        for step in pipeline.steps:
            scores = step.apply(scores, view)
        return self._warp(scores)

    def count_tokens(self, run: torch.Tensor, count: torch.Tensor) -> None:
        """Count each row's kept tokens ``run[b, :count[b]]`` (B, T) for the penalties."""
        if self.pipeline.penalties is not None:
            self.pipeline.penalties.count_tokens(run, count)

    def _warp(self, scores: torch.Tensor) -> torch.Tensor:
        p = self.pipeline.params
        if not p.do_sample:  # greedy rows draw the argmax of the processed scores
            return scores
        batch, width, vocab = scores.shape
        return warp(scores.reshape(-1, vocab), p, width).view(batch, width, vocab)

