"""The ``"kivi"`` attention function, registered with transformers' ``AttentionInterface`` (and ``sdpa_mask`` as its
mask through ``AttentionMaskInterface``), so unmodified models attend over a :class:`~.kivi.KiviCache`.

Dispatch on what the cache's ``update`` returned as ``key``:

- a Tensor (a sliding-window layer, or no cache): transformers' SDPA attention, unchanged;
- a :class:`~.kivi.KiviHandle` with no past (prefill): SDPA on the exact keys/values of the residual;
- a handle with a past: the ``kivi_attention`` op over the packed store plus the residual.

Then the layer flushes full groups of its residual into the packed store, with the padding read off the mask.
A :class:`~.static_kivi.StaticKiviHandle` (the compiled step's cache) takes the same two paths on fixed shapes.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..ops.kivi import kivi_attention
from .kivi import KiviHandle
from .static_kivi import StaticKiviHandle

ATTENTION_NAME = "kivi"


def _bool_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The model's mask as ``(B, Q, kv)`` bool, True = attend (an additive float mask is converted)."""
    if attention_mask is None:
        return None
    if attention_mask.dtype != torch.bool:
        attention_mask = attention_mask == 0
    return attention_mask[:, 0]


def kivi_attention_forward(
    module: torch.nn.Module, query: torch.Tensor, key, value, attention_mask: torch.Tensor | None,
    dropout: float = 0.0, scaling: float | None = None, **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention for ``query (B, Hq, Q, D)``; returns ``(out (B, Q, Hq, D), None)`` like every transformers one."""
    if not isinstance(key, (KiviHandle, StaticKiviHandle)):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if kwargs.get("softcap") is not None or kwargs.get("sliding_window") is not None:
        raise ValueError("the KIVI attention supports neither logit soft-capping nor a sliding window on its layers")
    if dropout:
        raise ValueError("the KIVI attention is for inference: attention dropout must be 0")
    layer = key.layer
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    mask = _bool_mask(attention_mask)
    if isinstance(key, StaticKiviHandle):
        return _static_attention(module, query, key, attention_mask, mask, scale, **kwargs), None
    if key.past_length == 0:
        keys, values = layer.residual()
        out, _ = sdpa_attention_forward(module, query, keys, values, attention_mask, scaling=scale, **kwargs)
    else:
        out = kivi_attention(
            query, *layer.packed(), layer.residual_keys, layer.residual_values, layer.storage_order(mask),
            layer.n_quant, layer.n_residual, scale, layer.nbits, layer.group_size, layer.backend,
        ).transpose(1, 2)
    # The last query row of a causal mask marks every cached position: False there is padding.
    layer.flush(None if mask is None else mask[:, -1])
    return out, None


def _static_attention(module, query, handle: StaticKiviHandle, attention_mask, mask, scale, **kwargs) -> torch.Tensor:
    """The paths above on a static layer, whose ``attention_mask`` spans every slot of the bucket."""
    layer = handle.layer
    if handle.prompt_keys is not None:
        length = handle.prompt_keys.shape[2]
        if attention_mask is not None:
            attention_mask, mask = attention_mask[..., :length], mask[..., :length]
        out, _ = sdpa_attention_forward(module, query, handle.prompt_keys, handle.prompt_values, attention_mask,
                                        scaling=scale, **kwargs)
        layer.prefill(handle.prompt_keys, handle.prompt_values, None if mask is None else mask[:, -1])
        return out
    if mask is None:
        raise ValueError("the static KIVI cache needs the attention mask of the step (its unused slots are masked)")
    out = kivi_attention(
        query, *layer.packed(), layer.residual_keys, layer.residual_values,
        layer.storage_mask(mask[:, -1])[:, None].expand(-1, query.shape[2], -1),
        layer.capacity, layer.residual_keys.shape[2], scale, layer.nbits, layer.group_size, layer.backend,
    ).transpose(1, 2)
    layer.flush(mask[:, -1])
    return out


AttentionInterface.register(ATTENTION_NAME, kivi_attention_forward)
AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
