"""``use_cache=False``: no KV cache; every forward runs the whole sequence so far, as transformers' generate does.

:class:`TokenHistory` takes the KV cache's place in the runners: it holds the ids fed so far and follows the batch
operations the strategies apply to a cache (beam reorders, dropped rows, rows repeated after a shared prefill), so
the next forward sees each row's own sequence. The model's outputs (hidden states, attentions) then cover every
position, step by step, as transformers returns them.
"""
from __future__ import annotations

import torch


class TokenHistory:
    """The ids (rows, length) fed to the model so far, or None before the first forward."""

    is_compileable = False

    def __init__(self):
        self.ids = None

    def extend(self, ids: torch.Tensor) -> torch.Tensor:
        """Append ``ids`` (rows, T) and return the whole sequence (rows, length + T)."""
        self.ids = ids if self.ids is None else torch.cat([self.ids, ids], dim=1)
        return self.ids

    def get_seq_length(self, *_) -> int:
        """No key/value is cached: a forward never skips positions."""
        return 0

    def reorder_cache(self, rows: torch.Tensor) -> None:
        self.ids = self.ids[rows.to(self.ids.device)]

    def batch_select_indices(self, rows: torch.Tensor) -> None:
        self.ids = self.ids[rows.to(self.ids.device)]

    def batch_repeat_interleave(self, count: int) -> None:
        self.ids = self.ids.repeat_interleave(count, dim=0)


def full_positions(mask: torch.Tensor | None, rows: int, length: int, device) -> torch.Tensor:
    """Position ids (rows, length) of a whole sequence, from its attention mask as transformers builds them."""
    if mask is None:
        return torch.arange(length, device=device).unsqueeze(0).expand(rows, -1)
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
