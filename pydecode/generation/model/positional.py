"""Model inputs with one value per token position (``token_type_ids`` and the like), fed as transformers feeds them.

transformers' generate extends these inputs by one value per generated token (``_update_model_kwargs_for_generation``:
``token_type_ids`` repeat their last value, ``mm_token_type_ids`` get zeros) and gives each forward the slice that
matches its tokens (``prepare_inputs_for_generation``). Every generated position of a row thus holds one constant
value, so here a row keeps its prompt's values plus that constant: any forward, over any positions (a prefill that
skips cached positions, one step, a speculative block, K candidates at one position), gets its window from them.
"""
from __future__ import annotations

import torch

# name -> how generated positions are filled: "last" repeats the prompt's last value, "zero" writes 0
RULES = {"token_type_ids": "last", "mm_token_type_ids": "zero", "moe_mm_token_type_ids": "last"}


class PositionalInputs:
    """The per-position inputs of one call: ``prompt`` (name -> (rows, ..., L0) tensor, rows already expanded)."""

    def __init__(self, prompt: dict[str, torch.Tensor]):
        self.prompt = prompt
        self.generated = {name: (value[..., -1:] if RULES[name] == "last" else torch.zeros_like(value[..., -1:]))
                          for name, value in prompt.items()}

    @classmethod
    def take(cls, model_kwargs: dict, rows: int, expand: int, prompt_len: int) -> PositionalInputs | None:
        """Take the per-position inputs out of ``model_kwargs`` (None when there are none), checked against the prompt
        (``rows / expand`` prompts of ``prompt_len`` positions) and repeated ``expand`` times per prompt."""
        found = {}
        for name in RULES:
            value = model_kwargs.pop(name, None)
            if value is None:
                continue
            if not isinstance(value, torch.Tensor) or value.dim() < 2 or value.shape[0] * expand != rows \
                    or value.shape[-1] != prompt_len:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"{name} must be a tensor of shape ({rows // expand}, ..., {prompt_len}), one value "
                                 f"per prompt position, got {shape}")
            found[name] = value.repeat_interleave(expand, dim=0) if expand > 1 else value
        return cls(found) if found else None

    def window(self, start: int, count: int, rows=None) -> dict[str, torch.Tensor]:
        """Each input's values at positions ``start .. start + count - 1`` (of ``rows``, an index or slice, if
        given)."""
        out = {}
        for name, prompt in self.prompt.items():
            length = prompt.shape[-1]
            parts = [prompt[..., start: min(start + count, length)]] if start < length else []
            extra = start + count - max(start, length)
            if extra > 0:
                parts.append(self.generated[name].expand(*prompt.shape[:-1], extra))
            value = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
            out[name] = (value if rows is None else value[rows]).contiguous()
        return out

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a 1-D index tensor) of the batch."""
        self.prompt = {name: value[rows] for name, value in self.prompt.items()}
        self.generated = {name: value[rows] for name, value in self.generated.items()}
