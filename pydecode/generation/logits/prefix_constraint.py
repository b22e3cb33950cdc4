"""``prefix_allowed_tokens_fn`` (constrained generation, e.g. to a grammar or a list of entities) with transformers'
semantics: at every position the user's function gets the prompt's index and the row's tokens so far (prompt and
padding included) and returns the token ids allowed next; every other token gets ``-inf`` added. When that would
leave all the rows of a prompt with ``-inf`` only, those rows get 0 on their allowed tokens, so the constraint
still holds. The function is Python on the host: this step reads the rows back once per position.
"""
from __future__ import annotations

import torch


class PrefixConstraint:
    """The constraint over ``rows`` rows, ``rows_per_prompt`` consecutive ones per prompt (beams, return
    sequences, or a diverse beam search group's beams)."""

    def __init__(self, fn, rows: int, rows_per_prompt: int):
        if not callable(fn):
            raise TypeError(f"prefix_allowed_tokens_fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.prompt_of_row = torch.arange(rows) // rows_per_prompt  # on the host, kept through row selections

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (their prompts stay theirs)."""
        self.prompt_of_row = self.prompt_of_row[rows.cpu()]

    def __call__(self, scores: torch.Tensor, history: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """``scores`` (B, T, V) plus the constraint's mask; position t of row b follows ``history[b, :at[b, t]]``."""
        mask = torch.full_like(scores, float("-inf"))
        prompts = self.prompt_of_row.tolist()
        for row, (prompt, lengths) in enumerate(zip(prompts, at.tolist())):
            for position, length in enumerate(lengths):
                allowed = self.fn(prompt, history[row, :length])
                if len(allowed) == 0:
                    raise ValueError(f"prefix_allowed_tokens_fn returned no allowed token for prompt {prompt}: the "
                                     "constraint cannot be satisfied")
                mask[row, position, allowed] = 0.0
        constrained = scores + mask
        # positions where every row of a prompt is left with -inf only: the allowed tokens alone, at 0
        index = self.prompt_of_row.to(scores.device)
        alive = torch.zeros(len(prompts) and int(index.max()) + 1, scores.shape[1], dtype=torch.int32,
                            device=scores.device)
        alive.index_add_(0, index, (~constrained.amax(dim=-1).isneginf()).to(torch.int32))
        return torch.where((alive[index] == 0)[..., None], mask, constrained)
