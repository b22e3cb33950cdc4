"""Classifier-free guidance for decoder-only models (``guidance_scale``; Sanchez et al., arXiv 2306.17806), with
transformers' semantics: the first step of the logits pipeline turns the scores into

    scale * (log_softmax(scores) - log_softmax(unconditional)) + log_softmax(unconditional)

where ``unconditional`` are the logits of a second run of the model over ``negative_prompt_ids`` (by default the
prompt's last token alone), fed each chosen token in turn with its own KV cache and no position ids, as transformers
feeds it. One extra forward per step; only greedy decoding and sampling take it.
"""
from __future__ import annotations

import torch
from transformers import DynamicCache

from ..model.compat import cache_argument


class Guidance:
    """The unconditional run of one generate() call.

    ``negative_ids`` / ``negative_mask``: (B, Ln) ids and mask of the negative prompt, expanded like the rows, or
    None for the prompt's last token.
    """

    def __init__(self, model, scale: float, negative_ids: torch.Tensor | None, negative_mask: torch.Tensor | None):
        self.model, self.scale = model, float(scale)
        self.ids, self.mask = negative_ids, negative_mask
        self.cache = DynamicCache(config=model.config)
        self.started = False

    def __call__(self, scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Guided log-probabilities (B, V) from the conditional ``scores`` (B, V); ``history`` (B, L) ends with the
        token chosen last (the prompt's last one at the first step)."""
        scores = scores.log_softmax(dim=-1)
        last = history[:, -1:]
        if not self.started:
            ids = self.ids if self.ids is not None else last
            self.mask = self.mask if self.mask is not None else torch.ones_like(ids)
            self.started = True
        else:
            ids = last
            self.mask = torch.cat([self.mask, torch.ones_like(last)], dim=1)
        out = self.model(ids, attention_mask=self.mask, use_cache=True, **{cache_argument(self.model): self.cache})
        unconditional = out.logits[:, -1].float().log_softmax(dim=-1)
        return self.scale * (scores - unconditional) + unconditional

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the unconditional run (after its first step)."""
        self.cache.batch_select_indices(rows)
        self.mask = self.mask[rows]
        if self.ids is not None:
            self.ids = self.ids[rows]


def make_guidance(model, config, model_kwargs: dict, strategy: str, expand: int, encoder_decoder: bool):
    """The :class:`Guidance` of a call whose config asks for it (``guidance_scale`` not None nor 1), else None;
    takes ``negative_prompt_ids`` / ``negative_prompt_attention_mask`` out of ``model_kwargs``."""
    negative = model_kwargs.pop("negative_prompt_ids", None)
    negative_mask = model_kwargs.pop("negative_prompt_attention_mask", None)
    scale = config.guidance_scale
    if scale is None or scale == 1:
        return None
    if encoder_decoder or strategy != "sample":
        raise NotImplementedError("guidance_scale is supported with greedy decoding and sampling on decoder-only "
                                  f"models, not with the {strategy!r} strategy"
                                  + (" on an encoder-decoder" if encoder_decoder else ""))
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not abs(scale) < float("inf"):
        raise ValueError(f"guidance_scale must be a finite number, got {scale!r}")
    if negative is not None:
        negative = negative.repeat_interleave(expand, dim=0)
        negative_mask = negative_mask.repeat_interleave(expand, dim=0) if negative_mask is not None else None
    return Guidance(model, scale, negative, negative_mask)
