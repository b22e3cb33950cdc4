"""Pure-PyTorch reference of the token bans computed from the history: n-gram blocking and bad words.

``history`` is the (B, L) int64 token history (prompt, padding included, then generated tokens), as transformers'
``input_ids``. Each function returns a (B, V) bool mask of tokens banned at the next position. No host sync.
"""
from __future__ import annotations

import torch


def token_mask(tokens: list[int], vocab_size: int, device) -> torch.Tensor | None:
    """(V,) bool mask of ``tokens`` (a ban that does not depend on the history), or None when there are none."""
    if not tokens:
        return None
    mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    mask[tokens] = True
    return mask


def history_tail(history: torch.Tensor, at: torch.Tensor, count: int) -> torch.Tensor:
    """(B, T, count): the ``count`` tokens of ``history`` (B, H) just before each position ``at`` (B, T) (indices
    clamped into the buffer: the caller masks positions with fewer tokens before them)."""
    batch, width = at.shape
    index = (at[..., None] - count + torch.arange(count, device=at.device)).clamp(0, history.shape[1] - 1)
    return history.gather(1, index.view(batch, -1)).view(batch, width, count)


def ngram_completions(grams: torch.Tensor, prefix: torch.Tensor, vocab_size: int,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, V) bool: the last tokens of the n-grams ``grams`` (B, G, n) whose first n - 1 tokens equal ``prefix``
    (B, T, n - 1), for each of T positions; ``valid`` (B, T, G) bool, if given, limits the n-grams per position."""
    batch, width = prefix.shape[:2]
    banned = torch.zeros(batch, width, vocab_size + 1, dtype=torch.bool, device=grams.device)
    match = (grams[:, None, :, :-1] == prefix[:, :, None, :]).all(dim=-1)  # (B, T, G)
    if valid is not None:
        match &= valid
    last = grams[:, None, :, -1].expand(-1, width, -1).clamp(0, vocab_size - 1)
    banned.scatter_(2, torch.where(match, last, vocab_size), True)
    return banned[..., :vocab_size]


def no_repeat_ngram_banned(history: torch.Tensor, ngram_size: int, vocab_size: int) -> torch.Tensor:
    """Tokens that would complete an n-gram already present in the row's history."""
    batch, length = history.shape
    if ngram_size <= 0 or length < ngram_size:
        return torch.zeros(batch, vocab_size, dtype=torch.bool, device=history.device)
    prefix = history[:, None, length - ngram_size + 1:]
    return ngram_completions(history.unfold(1, ngram_size, 1), prefix, vocab_size)[:, 0]


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
