"""The attention mask over cache slots that both runners keep once speculative decoding leaves holes in the cache."""
from __future__ import annotations

import torch


class SlotMask:
    """Mixin for a runner with ``mask`` ((rows, slots) int64 or None: no holes yet), ``length`` (slots in use) and
    ``cache``; :meth:`_mask_rows` tells how many rows the mask has and on which device."""

    def _mask_rows(self) -> tuple[int, torch.device]:
        raise NotImplementedError

    def keep_last(self, t: int, keep: torch.Tensor, longest: int) -> None:
        """Of the last ``t`` cache slots keep the first ``keep[b]`` (B,) of each row, the rest become holes; the
        cache is cropped to the slots before them plus ``longest`` (the host value of ``keep.max()``)."""
        start = self.length - t
        self._reserve_mask(self.length)
        slot = torch.arange(t, device=keep.device)
        self.mask[:, start: self.length] *= (slot[None, :] < keep[:, None]).to(self.mask.dtype)
        if start + longest < self.length:
            self.cache.crop(start + longest - self.length)  # transformers 5: a negative count of slots to drop
        self.mask[:, start + longest: self.length] = 1  # slots past the cache are reused by later steps
        self.length = start + longest

    def _reserve_mask(self, length: int) -> None:
        """Make sure the mask buffer exists (holes need one) and has at least ``length`` slots."""
        if self.mask is None:
            rows, device = self._mask_rows()
            self.mask = torch.ones(rows, max(length, self.length), dtype=torch.long, device=device)
        if self.mask.shape[1] < length:
            grow = max(length - self.mask.shape[1], self.mask.shape[1] // 2)
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], grow)], dim=1)
