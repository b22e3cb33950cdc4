"""The token history and finished-row bookkeeping shared by the strategies that emit one token per row per step."""
from __future__ import annotations

import torch

from .context import DecodeContext


class DecodeState:
    """History (rows, max_length) preallocated once, the ``unfinished`` rows, and the per-step stopping check.

    ``alive`` is None while every row is computed; once finished rows are dropped from the batch
    (:meth:`drop_finished`) it holds the indices of the rows still computed, and tokens / ``unfinished`` refer to
    those rows only. The only host read per step is in :meth:`done`, and only when a row can finish early.
    """

    def __init__(self, ctx: DecodeContext):
        self.ctx = ctx
        input_ids = ctx.input_ids
        rows, prompt_len = input_ids.shape
        fill = 0 if ctx.pad_id is None else ctx.pad_id
        self.history = torch.full((rows, ctx.max_length), fill, dtype=torch.long, device=input_ids.device)
        self.history[:, :prompt_len] = input_ids
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=input_ids.device)
        self.pad = None if ctx.pad_id is None else torch.tensor(ctx.pad_id, device=input_ids.device)
        self.cur_len, self.step, self.host_syncs, self.left = prompt_len, 0, 0, rows
        self.alive = None

    def past(self) -> torch.Tensor:
        """The computed rows' tokens so far (a view while no row was dropped)."""
        if self.alive is None:
            return self.history[:, : self.cur_len]
        return self.history[self.alive, : self.cur_len]

    def append(self, tokens: torch.Tensor, scores) -> torch.Tensor:
        """Append each computed row's token (finished rows get the pad token), count it, stream it, update stopping."""
        ctx = self.ctx
        if self.pad is not None and ctx.stops.can_stop_rows:
            tokens = torch.where(self.unfinished, tokens, self.pad)
        self.history[slice(None) if self.alive is None else self.alive, self.cur_len] = tokens
        ctx.pipeline.record(tokens)
        self.cur_len, self.step = self.cur_len + 1, self.step + 1
        if ctx.streamer is not None:
            ctx.streamer.put(self.history[:, self.cur_len - 1].cpu())
        self.unfinished = ctx.stops.update(self.unfinished, self.past(), tokens, scores)
        return tokens

    def done(self) -> bool:
        """True once the length or time limit is reached or every row has finished (one host read per step)."""
        stops = self.ctx.stops
        if self.cur_len >= self.ctx.max_length or stops.out_of_time():
            return True
        if not stops.can_stop_rows:
            return False
        self.host_syncs += 1
        self.left = int(self.unfinished.sum())
        return self.left == 0

    def drop_finished(self) -> torch.Tensor:
        """Stop computing finished rows; returns the kept positions among the computed rows (one more host read)."""
        keep = self.unfinished.nonzero().squeeze(1)
        self.host_syncs += 1
        self.alive = keep if self.alive is None else self.alive[keep]
        self.unfinished = self.unfinished[keep]
        return keep

    def finish(self, record):
        """End the stream and return the sequences, or the output object ``record`` builds."""
        if self.ctx.streamer is not None:
            self.ctx.streamer.end()
        sequences = self.history[:, : self.cur_len]
        if not self.ctx.config.return_dict_in_generate:
            return sequences
        return record.finish(sequences, self.ctx.runner.cache, self.host_syncs)
