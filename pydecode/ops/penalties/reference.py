"""Pure-PyTorch reference of the penalties, applied in place to float32 logits of shape (B, V).

- repetition (transformers semantics): every token seen in the prompt or generated so far has its logit divided by
  the penalty when positive and multiplied by it when negative; 1.0 is a no-op.
- frequency and presence (OpenAI semantics, generated tokens only):
  ``logit -= frequency * count + presence * (count > 0)``.

``token_counts`` (B, V) int32 counts the generated tokens; ``prompt_mask`` (B, V) bool marks the prompt's tokens.
Each penalty is a scalar for every row or a tensor of shape (B,).
"""
from __future__ import annotations

import torch

from ..rows import per_row


def apply_penalties_(logits, token_counts, prompt_mask, repetition=1.0, frequency=0.0, presence=0.0) -> torch.Tensor:
    """Apply the three penalties to ``logits`` in place and return it."""
    batch = logits.shape[0]
    generated = token_counts > 0
    rep = per_row(repetition, batch, logits.device, torch.float32)
    seen = generated | prompt_mask if prompt_mask is not None else generated
    penalised = torch.where(logits < 0, logits * rep, logits / rep)
    logits.copy_(torch.where(seen & (rep != 1.0), penalised, logits))
    freq = per_row(frequency, batch, logits.device, torch.float32)
    pres = per_row(presence, batch, logits.device, torch.float32)
    logits.sub_(freq * token_counts.to(torch.float32) + pres * generated.to(torch.float32))
    return logits


def record_tokens_(token_counts: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Count each row's new token: ``token_counts[b, tokens[b]] += 1``, in place."""
    column = tokens.view(-1, 1)
    token_counts.scatter_add_(1, column.to(torch.int64), torch.ones_like(column, dtype=token_counts.dtype))
    return token_counts


def prompt_token_mask(input_ids: torch.Tensor, vocab_size: int,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) bool: which tokens occur in each prompt, leading (left) padding excluded as transformers does."""
    batch, length = input_ids.shape
    ids = input_ids.clamp(0, vocab_size - 1)
    keep = torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask is not None:
        first_real = (attention_mask != 0).int().argmax(dim=1, keepdim=True)
        keep = torch.arange(length, device=input_ids.device)[None, :] >= first_real
    mask = torch.zeros(batch, vocab_size + 1, dtype=torch.bool, device=input_ids.device)
    mask.scatter_(1, torch.where(keep, ids, vocab_size), True)
    return mask[:, :vocab_size].contiguous()
