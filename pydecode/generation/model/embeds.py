"""Prompts given as ``inputs_embeds`` (decoder-only models), with transformers' semantics.

The model's first forward reads the embeddings; every later step feeds the chosen token as usual. With embeddings
alone the token history starts empty: the processors see only the generated tokens, the output holds only them,
and a ``max_length`` / ``min_length`` set by the caller counts the embedded positions (transformers subtracts them).
With ``input_ids`` too (one id per embedded position), the ids are the history and the output starts with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EmbeddedPrompt:
    """What a call with ``inputs_embeds`` runs with: the token history's start ``input_ids`` (B, L or 0) and its
    ``attention_mask`` (None when empty), and the model's view: ``embeds`` (B, L, H) with ``model_mask`` (B, L) or
    None."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    embeds: torch.Tensor
    model_mask: torch.Tensor | None

    @property
    def extra_positions(self) -> int:
        """Model positions the token history does not hold (the embedded prompt, when given alone)."""
        return self.embeds.shape[1] - self.input_ids.shape[1]

    def expand(self, count: int) -> None:
        """Repeat every row ``count`` times (beams, return sequences), as the token rows are."""
        if count > 1:
            self.embeds = self.embeds.repeat_interleave(count, dim=0)
            self.model_mask = self.model_mask.repeat_interleave(count, dim=0) if self.model_mask is not None else None


def embedded_prompt(model, input_ids, attention_mask, embeds, config, has_default_max_length: bool,
                    strategy: str, encoder_decoder: bool) -> EmbeddedPrompt:
    """Check ``inputs_embeds`` (and ``input_ids`` / ``attention_mask`` beside them); adjust the config's lengths
    as transformers does."""
    if encoder_decoder or strategy not in ("sample", "beam"):
        raise NotImplementedError("inputs_embeds is supported with greedy decoding, sampling and the beam family on "
                                  f"decoder-only models, not with the {strategy!r} strategy"
                                  + (" on an encoder-decoder" if encoder_decoder else ""))
    if config.prefill_chunk_size is not None:
        raise NotImplementedError("prefill_chunk_size cannot split a prompt given as inputs_embeds")
    hidden = model.get_input_embeddings().embedding_dim
    if not isinstance(embeds, torch.Tensor) or not embeds.is_floating_point() or embeds.dim() != 3 \
            or embeds.shape[2] != hidden or embeds.shape[1] == 0:
        raise ValueError(f"inputs_embeds must be a float tensor of shape (batch, length >= 1, {hidden}), got "
                         f"{tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__}")
    batch, length = embeds.shape[:2]
    device = model.device
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask must have the shape of inputs_embeds' first two dimensions {(batch, length)}"
                         f", got {tuple(attention_mask.shape)}")
    mask = attention_mask.to(device) if attention_mask is not None else None
    if input_ids is not None:
        if tuple(input_ids.shape) != (batch, length):
            raise ValueError(f"input_ids given with inputs_embeds must have shape {(batch, length)}, one id per "
                             f"embedded position, got {tuple(input_ids.shape)}")
        return EmbeddedPrompt(input_ids.to(device, torch.long), mask, embeds.to(device), mask)
    if config.max_new_tokens is None and not has_default_max_length:
        config.max_length -= length
    if config.min_new_tokens is None and config.min_length:
        config.min_length = max(config.min_length - length, 0)
    empty = torch.zeros(batch, 0, dtype=torch.long, device=device)
    return EmbeddedPrompt(empty, None, embeds.to(device), mask)
