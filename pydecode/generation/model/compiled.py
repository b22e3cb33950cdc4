"""The compiled decode step: transformers' generate runs its decoding steps through the model's own compiled call
(``model.get_compiled_call(compile_config)``) when the cache is compileable (a static cache) and the device is one
it compiles on (or ``compile_config`` asks for every device), unless ``disable_compile`` is set. pydecode does the
same, under the same conditions: the prompt's forward runs eagerly, each step after it through the compiled call,
with the attention mask built ahead as a 4D mask over the whole static cache (fixed shapes: no recompilation).
"""
from __future__ import annotations

import torch
from transformers.masking_utils import create_masks_for_generate

from .no_cache import TokenHistory


def compiled_forward(model, config, cache):
    """The model's compiled call for the decoding steps when transformers' generate would use one, else None."""
    criteria = getattr(model, "_valid_auto_compile_criteria", None)
    if criteria is None or cache is None or isinstance(cache, TokenHistory):
        return None
    if not criteria({"cache": cache}, config):
        return None
    return model.get_compiled_call(config.compile_config)


def mask_for_compiled_step(model, cache, attention_mask, position_ids, rows: int, tokens: int, device):
    """The attention mask transformers hands a compiled step: the 2D mask (or None) made 4D over the cache."""
    make = getattr(model, "create_masks_for_generate", create_masks_for_generate)
    mask = make(config=model.config, inputs_embeds=torch.empty((rows, tokens, 0), dtype=model.dtype, device=device),
                attention_mask=attention_mask, cache=cache, position_ids=position_ids)
    # contiguous, as transformers hands it over: a stride change would recompile the step
    if isinstance(mask, dict):
        return {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in mask.items()}
    return mask.contiguous() if isinstance(mask, torch.Tensor) else mask
