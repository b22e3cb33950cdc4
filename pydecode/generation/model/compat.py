"""Names transformers 5 changed between minor releases: the KV cache is ``past_key_values`` up to 5.2x and ``cache``
after (the old name is deprecated, to be removed in 5.40), in model forwards and in ``generate``'s outputs alike."""
from __future__ import annotations

import functools
import inspect

from transformers.generation.utils import GenerateDecoderOnlyOutput

from .no_cache import TokenHistory

# the field of generate's output classes that holds the KV cache
OUTPUT_CACHE_FIELD = "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"
# what a caller may pass to generate as its own KV cache, the current name first
USER_CACHE_KWARGS = ("cache", "past_key_values")


@functools.lru_cache(maxsize=None)
def _forward_takes_cache(model_class: type) -> bool:
    params = inspect.signature(model_class.forward).parameters
    return "cache" in params and "past_key_values" not in params


def cache_argument(model) -> str:
    """The keyword under which ``model``'s forward takes the KV cache."""
    return "cache" if _forward_takes_cache(type(model)) else "past_key_values"


def with_cache(cache) -> dict:
    """Keyword arguments that put ``cache`` into one of generate's output classes (None with ``use_cache=False``,
    whose runners hold a token history in the cache's place)."""
    return {OUTPUT_CACHE_FIELD: None if isinstance(cache, TokenHistory) else cache}
