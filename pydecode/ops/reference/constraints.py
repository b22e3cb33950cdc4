"""Pure-PyTorch reference of the token bans computed from the history: n-gram blocking and bad words.

``history`` is the (B, L) int64 token history (prompt, padding included, then generated tokens), as transformers'
``input_ids``. Each function returns a (B, V) bool mask of tokens banned at the next position. No host sync.
"""
from __future__ import annotations

import torch


def no_repeat_ngram_banned(history: torch.Tensor, ngram_size: int, vocab_size: int) -> torch.Tensor:
    """Tokens that would complete an n-gram already present in the row's history."""
    batch, length = history.shape
    banned = torch.zeros(batch, vocab_size + 1, dtype=torch.bool, device=history.device)
    if ngram_size <= 0 or length < ngram_size:
        return banned[:, :vocab_size]
    windows = history.unfold(1, ngram_size, 1)
    prefix = history[:, length - ngram_size + 1:]
    match = (windows[:, :, :-1] == prefix[:, None, :]).all(dim=-1)
    banned.scatter_(1, torch.where(match, windows[:, :, -1].clamp(0, vocab_size - 1), vocab_size), True)
    return banned[:, :vocab_size]


def bad_words_banned(history: torch.Tensor, bad_words_ids: list[list[int]], vocab_size: int) -> torch.Tensor:
    """Tokens that would complete a bad-word sequence (a one-token sequence is always banned)."""
    batch, length = history.shape
    banned = torch.zeros(batch, vocab_size, dtype=torch.bool, device=history.device)
    for word in bad_words_ids:
        *prefix, last = word
        if len(prefix) == 0:
            banned[:, last] = True
        elif len(prefix) <= length:
            tail = history[:, length - len(prefix):]
            match = (tail == torch.tensor(prefix, device=history.device)).all(dim=-1)
            banned[:, last] |= match
    return banned
