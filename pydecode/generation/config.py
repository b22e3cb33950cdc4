"""Generation settings: transformers' GenerationConfig plus pydecode's fields, resolved as transformers does.

Resolution order (as ``model.generate``): the ``generation_config`` argument, else ``model.generation_config``;
then the keyword arguments override. Per-row parameters given as tensors of shape (B,) are kept aside (a config
holds scalars) and applied on top in :class:`~pydecode.sampling.params.RowParams`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import transformers

# pydecode's additions to transformers' GenerationConfig, with their defaults
EXTRA_FIELDS = {
    "frequency_penalty": 0.0, "presence_penalty": 0.0, "seed": None, "output_logprobs": False, "top_logprobs": 0,
    "backend": None, "dynatemp_range": 0.0, "dynatemp_exponent": 1.0,
}

# cache implementations pydecode provides itself (transformers' config validation does not know them)
PYDECODE_CACHES = ("kivi",)

# parameters that may be a tensor of shape (batch,): one value per row
PER_ROW_FIELDS = (
    "temperature", "top_k", "top_p", "min_p", "typical_p", "top_h", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "frequency_penalty", "presence_penalty", "seed", "dynatemp_range", "dynatemp_exponent",
)

# transformers features pydecode does not implement (yet): a non-default value raises NotImplementedError. Constrained
# beam search is on the Hub in transformers 5; the others pick other draft sources or mix draft and target
# distributions.
UNSUPPORTED = {
    "force_words_ids": (None,), "constraints": (None,), "assistant_early_exit": (None,), "use_mtp": (None, False),
    "assistant_ensemble_weight": (None,), "speculation_type": (None,),
}


class GenerationConfig(transformers.GenerationConfig):
    """transformers' ``GenerationConfig`` with pydecode's fields; saves and loads JSON the same way.

    Extra fields: ``frequency_penalty`` and ``presence_penalty`` (OpenAI semantics, default 0), ``seed`` (int; the
    per-row random streams derive from it), ``output_logprobs`` (bool, report each token's logprob),
    ``top_logprobs`` (int, how many alternatives to report per token), ``backend``
    ("auto" | "torch" | "cpp" | "triton" | "cuda"), and ``dynatemp_range`` / ``dynatemp_exponent`` (entropy-scaled
    temperature within ``temperature ± dynatemp_range``, llama.cpp's definition; range 0 = off).
    """

    def __init__(self, **kwargs):
        for name, default in EXTRA_FIELDS.items():
            setattr(self, name, kwargs.pop(name, default))
        own_cache = (kwargs.pop("cache_implementation") if kwargs.get("cache_implementation") in PYDECODE_CACHES
                     else None)
        super().__init__(**kwargs)
        if own_cache is not None:
            self.cache_implementation = own_cache


@dataclass
class ResolvedConfig:
    """What one generate() call runs with: the config, per-row tensor overrides, and the model's own kwargs."""

    config: transformers.GenerationConfig
    per_row: dict[str, torch.Tensor] = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)
    has_default_max_length: bool = True

    def extra(self, name: str):
        """A pydecode field: its per-row tensor if given, else the config's value, else the default."""
        if name in self.per_row:
            return self.per_row[name]
        return getattr(self.config, name, EXTRA_FIELDS.get(name))


def resolve_config(model, generation_config, kwargs: dict) -> ResolvedConfig:
    """Merge ``generation_config`` (or the model's) with ``kwargs`` exactly as transformers' generate does."""
    kwargs = dict(kwargs)
    per_row = {k: kwargs.pop(k) for k in PER_ROW_FIELDS if isinstance(kwargs.get(k), torch.Tensor)}
    extras = {k: kwargs.pop(k) for k in list(kwargs) if k in EXTRA_FIELDS}
    if kwargs.get("cache_implementation") in PYDECODE_CACHES:
        extras["cache_implementation"] = kwargs.pop("cache_implementation")
    model_default = getattr(model, "generation_config", None)
    has_default_max_length = (
        kwargs.get("max_length") is None
        and (generation_config is None or generation_config.max_length is None)
        and (model_default is None or model_default.max_length is None)
    )
    if hasattr(model, "_prepare_generation_config"):
        config, model_kwargs = model._prepare_generation_config(
            copy.deepcopy(generation_config) if generation_config is not None else None, **kwargs
        )
    else:
        config = copy.deepcopy(generation_config or model_default or GenerationConfig())
        model_kwargs = config.update(**kwargs)
    for name, value in extras.items():
        setattr(config, name, value)
    return ResolvedConfig(config, per_row, model_kwargs, has_default_max_length)


def check_supported(config) -> None:
    """Raise NotImplementedError for a transformers feature pydecode does not run (instead of ignoring it)."""
    for name, defaults in UNSUPPORTED.items():
        value = getattr(config, name, None)
        if value not in defaults and not (isinstance(value, (list, tuple, dict)) and len(value) == 0):
            raise NotImplementedError(f"pydecode.generate does not support `{name}` (got {value!r}) yet")
