"""The model step shared by every strategy: prefill the prompt, then feed one token per row per step.

Inputs are built as transformers' generate builds them (position ids from the attention mask, the mask dropped when
it has no padding, logits of the last position only), so the logits match ``model.generate`` bit for bit.
"""
from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache

_MANAGED = ("input_ids", "attention_mask", "position_ids", "past_key_values", "use_cache", "cache_position")


class ModelRunner:
    """Runs a decoder-only model over its KV cache.

    ``attention_mask`` (B, L0) may be None (no padding). ``max_length`` sizes the preallocated mask buffer.
    ``cache`` defaults to a ``DynamicCache``; pass another transformers Cache (e.g. a KIVI cache) to use it.
    """

    def __init__(self, model, attention_mask, batch: int, prompt_len: int, max_length: int, device, cache=None,
                 model_kwargs=None):
        self.model = model
        self.cache = cache if cache is not None else DynamicCache(config=model.config)
        self.model_kwargs = {k: v for k, v in (model_kwargs or {}).items() if k not in _MANAGED}
        params = inspect.signature(model.forward).parameters
        if "logits_to_keep" in params and "logits_to_keep" not in self.model_kwargs:
            self.model_kwargs["logits_to_keep"] = 1
        self.takes_position_ids = "position_ids" in params
        self.length = prompt_len
        has_padding = attention_mask is not None and not bool((attention_mask == 1).all())  # one read, at set-up
        if has_padding:
            self.mask = torch.ones(batch, max_length, dtype=attention_mask.dtype, device=device)
            self.mask[:, :prompt_len] = attention_mask
            positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        else:
            self.mask = None
            positions = torch.arange(prompt_len, device=device).unsqueeze(0).expand(batch, -1)
        self.positions = positions.to(device)

    def _forward(self, input_ids: torch.Tensor):
        kwargs = dict(self.model_kwargs)
        if self.takes_position_ids:
            kwargs["position_ids"] = self.positions
        if self.mask is not None:
            kwargs["attention_mask"] = self.mask[:, : self.length]
        return self.model(input_ids=input_ids, past_key_values=self.cache, use_cache=True, return_dict=True, **kwargs)

    def prefill(self, input_ids: torch.Tensor):
        """Run the whole prompt (B, L0); returns the model output (``.logits`` of the last position)."""
        return self._forward(input_ids)

    def step(self, tokens: torch.Tensor):
        """Feed each row's new token (B,) and return the model output for the next position."""
        self.positions = self.positions[:, -1:] + 1
        self.length += 1
        return self._forward(tokens[:, None])
