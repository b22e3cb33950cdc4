"""When rows finish: eos tokens, stop strings, the user's stopping criteria, and the time budget.

The length limit is the loop's bound (known on the host). Everything else updates a (B,) bool ``unfinished`` tensor
without reading it back; the loop reads it once per step, and only when some criterion can end a row early.
"""
from __future__ import annotations

import time

import torch
from transformers.generation.stopping_criteria import StopStringCriteria


class StopConditions:
    """Row-wise stopping for one generate() call."""

    def __init__(self, config, eos_ids: torch.Tensor | None, tokenizer=None, stopping_criteria=None):
        self.eos_ids = eos_ids
        self.criteria = list(stopping_criteria or [])
        if config.stop_strings:
            if tokenizer is None:
                raise ValueError("stop_strings needs the model's tokenizer: pass tokenizer= to generate()")
            self.criteria.append(StopStringCriteria(tokenizer, config.stop_strings))
        self.max_time = config.max_time
        self.start = time.monotonic()

    @property
    def can_stop_rows(self) -> bool:
        """True when a row may finish before the length limit (the loop then syncs once per step)."""
        return self.eos_ids is not None or bool(self.criteria)

    def update(self, unfinished: torch.Tensor, history: torch.Tensor, tokens: torch.Tensor, scores) -> torch.Tensor:
        """New ``unfinished`` after ``tokens`` (B,) were appended to ``history`` (B, L)."""
        if self.eos_ids is not None:
            unfinished = unfinished & ~torch.isin(tokens, self.eos_ids)
        for criterion in self.criteria:
            done = criterion(history, scores)
            if isinstance(done, bool):
                done = torch.full_like(unfinished, done)
            unfinished = unfinished & ~done.to(unfinished.device)
        return unfinished

    def out_of_time(self) -> bool:
        return self.max_time is not None and time.monotonic() - self.start > self.max_time
