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


def bad_words_banned(history: torch.Tensor, bad_words: list[tuple[torch.Tensor, int]], vocab_size: int) -> torch.Tensor:
    """Tokens that would complete a bad-word sequence.

    ``bad_words`` holds ``(prefix, last)`` pairs: the sequence's first tokens as a 1-D int64 tensor on the history's
    device (built once, so no host-to-device copy per step) and its last token id; an empty prefix always bans.
    """
    batch, length = history.shape
    banned = torch.zeros(batch, vocab_size, dtype=torch.bool, device=history.device)
    for prefix, last in bad_words:
        n = prefix.shape[0]
        if n == 0:
            banned[:, last] = True
        elif n <= length:
            banned[:, last] |= (history[:, length - n:] == prefix).all(dim=-1)
    return banned
