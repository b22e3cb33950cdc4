"""Where a row's accepted run of tokens ends: after the first token at which plain decoding would have stopped the row
(an eos, a stop string, the user's stopping criteria).

Eos tokens and stop strings (transformers' ``StopStringCriteria``, which reads only the last
``maximum_token_len`` tokens of each row) are checked at every run position of every row at once, on the device.
Other criteria are opaque: they are called once per emitted token with the (B, length) history, as plain decoding
calls them, which needs the running rows at one length (the loop keeps them so) and one host read per step.
"""
from __future__ import annotations

import torch
from transformers.generation.stopping_criteria import StopStringCriteria


class RunStops:
    """Cuts runs written into ``history`` (B, max_length + 1, last column scratch); ``fill`` pads finished rows."""

    def __init__(self, ctx, history: torch.Tensor, fill: int):
        criteria = ctx.stops.criteria
        self.strings = [c for c in criteria if isinstance(c, StopStringCriteria)]
        self.others = [c for c in criteria if not isinstance(c, StopStringCriteria)]
        self.eos = ctx.eos_ids
        self.history, self.fill, self.max_length = history, fill, ctx.max_length
        self.host_reads = 0

    @property
    def needs_common_length(self) -> bool:
        """True when opaque criteria are set: running rows must then keep one length."""
        return bool(self.others)

    def cut(self, run: torch.Tensor, count: torch.Tensor, start: torch.Tensor, scores: torch.Tensor,
            common_start: int):
        """Write each row's ``run[b, :count[b]]`` (B, T) at ``start[b]`` of the history, ended after its first stop
        token. ``scores`` (B, T, V) are the processed scores the run was chosen from (for the opaque criteria);
        ``common_start`` is the host value of ``start`` for running rows. Returns ``(count, finished)`` (B,)."""
        slots = torch.arange(run.shape[1], device=run.device)
        stop = torch.isin(run, self.eos) if self.eos is not None else torch.zeros_like(run, dtype=torch.bool)
        if self.strings:
            self._write(run, count, start)
            stop |= self._string_hits(run, start)
        stop &= slots < count[:, None]
        finished = stop.any(1)
        count = torch.where(finished, stop.int().argmax(1) + 1, count)
        self._write(run, count, start)
        if self.others:
            count, finished = self._opaque_cut(count, finished, scores, common_start)
        return count, finished

    def _write(self, run: torch.Tensor, count: torch.Tensor, start: torch.Tensor) -> None:
        """``run[b, :count[b]]`` at ``start[b]``, ``fill`` after it (over any drafts left there)."""
        slots = torch.arange(run.shape[1], device=run.device)
        index = (start[:, None] + slots).clamp(max=self.max_length)  # past the buffer: the scratch column
        self.history.scatter_(1, index, torch.where(slots < count[:, None], run, self.fill))

    def _string_hits(self, run: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: a stop string ends at run position j (the run is already in the history)."""
        batch, width = run.shape
        hits = torch.zeros(batch, width, dtype=torch.bool, device=run.device)
        for criterion in self.strings:
            window = criterion.maximum_token_len
            index = (start[:, None, None] + torch.arange(width, device=run.device)[None, :, None] + 1 - window
                     + torch.arange(window, device=run.device))  # (B, T, W): the last W tokens up to position j
            tails = self.history.gather(1, index.clamp(0, self.max_length).view(batch, -1)).view(-1, window)
            no_token = criterion.embedding_vec.shape[0] - 1  # its dummy entry: matches nothing, as a shorter input
            tails = tails.masked_fill((index < 0).view(-1, window), no_token)
            hits |= criterion(tails, None).view(batch, width).to(hits.device)
        return hits

    def _opaque_cut(self, count: torch.Tensor, finished: torch.Tensor, scores: torch.Tensor, common_start: int):
        emitted = int(count.max())  # the step's one extra host read: how many times to call the criteria
        self.host_reads += 1
        for j in range(emitted):
            length = common_start + j + 1
            hit = torch.zeros_like(finished)
            for criterion in self.others:
                done = criterion(self.history[:, :length], scores[:, j])
                hit |= torch.full_like(hit, done) if isinstance(done, bool) else done.to(hit.device)
            hit &= j < count
            count = torch.where(hit, j + 1, count)
            finished = finished | hit
            # the next calls see a stopped row padded after its last token, as plain decoding pads it
            self.history[:, length: common_start + emitted].masked_fill_(hit[:, None], self.fill)
        return count, finished
