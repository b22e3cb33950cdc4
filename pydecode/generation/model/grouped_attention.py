"""The ``"pydecode_sdpa"`` attention: transformers' SDPA attention, minus one copy per layer for candidate steps.

transformers' SDPA attention repeats the key/value heads of a grouped-query model (``repeat_kv``: a copy of the
whole history per layer) whenever the query has several positions and a mask, which is every forward of
:meth:`.runner.ModelRunner.step_candidates` (K candidates in the query, a 4D mask). Here such a
forward lets SDPA read the grouped heads in place (``enable_gqa=True``: the same numbers, no copy); every other
forward runs transformers' SDPA attention unchanged. Registered with ``AttentionInterface`` (and ``sdpa_mask`` through
``AttentionMaskInterface``), switched on for a block by :func:`grouped_attention`.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION_NAME = "pydecode_sdpa"


def grouped_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                         **kwargs) -> tuple[torch.Tensor, None]:
    """Attention for ``query (B, Hq, Q, D)`` over ``key``/``value (B, Hkv, L, D)``; returns ``(out (B, Q, Hq, D),
    None)`` like transformers' SDPA attention, whose arguments it takes."""
    grouped = getattr(module, "num_key_value_groups", 1) > 1
    plain = kwargs.get("position_bias") is None and kwargs.get("softcap") is None and not dropout
    if not (grouped and plain and query.shape[2] > 1 and attention_mask is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def grouped_attention(model) -> Iterator[torch.nn.Module]:
    """Run ``model`` with the ``"pydecode_sdpa"`` attention inside the block when it runs SDPA (else unchanged)."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous != "sdpa" or not model._can_set_attn_implementation():
        yield model
        return
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        yield model
    finally:
        model.set_attn_implementation(previous)


AttentionInterface.register(ATTENTION_NAME, grouped_sdpa_forward)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
