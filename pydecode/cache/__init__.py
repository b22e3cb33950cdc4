"""KV caches that plug into unmodified transformers models: KIVI (2/4-bit keys and values + exact residual).

How a generate loop uses it (``pydecode.generate(..., cache_implementation="kivi", cache_config={...})``)::

    from pydecode.cache import activate, make_cache

    cache = make_cache("kivi", cache_config, model, batch_size, max_length)  # validates; raises ValueError
    with activate(model):                                                   # model runs the "kivi" attention
        ... every forward passes past_key_values=cache ...                  # e.g. model.generate(past_key_values=cache)

``cache_config`` keys (all optional): ``nbits`` (2 or 4, default 4), ``group_size`` (G, default 32, a multiple of 16
dividing head_dim), ``residual_length`` (R, default 128, a multiple of G), ``sink_length`` (S, the first tokens kept
exact, default :data:`DEFAULT_SINK_LENGTH`), ``key_clipping`` (least-error key ranges, default True), ``backend``
(kernel backend, default auto).
``max_length`` is the prompt plus new tokens: the packed store is preallocated for it. ``cache.memory_footprint()``
reports the KV bytes.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

from ..ops.kivi import DEFAULT_SINK_LENGTH, kivi_attention, kivi_pack, validate_kivi_config
from .attention import ATTENTION_NAME, kivi_attention_forward
from .kivi import KiviCache, KiviHandle, KiviLayer
from .static_kivi import StaticKiviCache, StaticKiviLayer

__all__ = [
    "KiviCache", "KiviHandle", "KiviLayer", "SUPPORTED_MODEL_TYPES", "StaticKiviCache", "StaticKiviLayer", "activate",
    "check_model", "kivi_attention", "kivi_attention_forward", "kivi_pack", "make_cache",
]

# Models whose attention passes the cache's keys/values untouched to the attention function (checked by reading
# their attention code; llama, qwen2 and gemma3_text are covered by tests).
SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma3_text"})
_CONFIG_KEYS = {"nbits", "group_size", "residual_length", "sink_length", "key_clipping", "backend"}


def _head_dim(text_config) -> int:
    return getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads


def check_model(model) -> None:
    """Raise ``ValueError`` if ``model``'s attention cannot run on a KIVI cache."""
    text_config = model.config.get_text_config(decoder=True)
    if text_config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"the KIVI cache supports model types {sorted(SUPPORTED_MODEL_TYPES)}, not {text_config.model_type!r} "
            "(its attention may change keys/values after the cache update)"
        )
    if not getattr(model, "_supports_attention_backend", False):
        raise ValueError(f"{type(model).__name__} does not dispatch attention through AttentionInterface")


def make_cache(name: str, cache_config: dict | None, model, batch_size: int, max_length: int) -> KiviCache:
    """Build the cache ``name`` (only ``"kivi"``) for ``model``, preallocated for ``batch_size`` x ``max_length``.

    Raises ``ValueError`` for an unknown name, an invalid ``cache_config`` or a model that cannot use the cache.
    """
    if name != "kivi":
        raise ValueError(f"unknown cache implementation {name!r}; pydecode provides 'kivi'")
    cache_config = dict(cache_config or {})
    unknown = set(cache_config) - _CONFIG_KEYS
    if unknown:
        raise ValueError(f"unknown KIVI cache_config keys {sorted(unknown)}; expected some of {sorted(_CONFIG_KEYS)}")
    check_model(model)
    text_config = model.config.get_text_config(decoder=True)
    nbits = cache_config.get("nbits", 4)
    group_size = cache_config.get("group_size", 32)
    residual_length = cache_config.get("residual_length", 128)
    sink_length = cache_config.get("sink_length", DEFAULT_SINK_LENGTH)
    key_clipping = cache_config.get("key_clipping", True)
    validate_kivi_config(nbits, group_size, residual_length, head_dim=_head_dim(text_config), sink_length=sink_length,
                         key_clipping=key_clipping)
    if batch_size <= 0 or max_length <= 0:
        raise ValueError(f"batch_size and max_length must be positive, got {batch_size} and {max_length}")
    cache = KiviCache(model.config, nbits, group_size, residual_length, max_length, cache_config.get("backend"),
                      sink_length, key_clipping)
    num_kv_heads = getattr(text_config, "num_key_value_heads", None) or text_config.num_attention_heads
    cache.early_initialization(batch_size, num_kv_heads, _head_dim(text_config), model.dtype, model.device)
    return cache


_ACTIVE_LOCK = threading.Lock()
_ACTIVE: dict[int, tuple[int, str]] = {}  # id(model) -> (blocks open on it, its attention before the first)


@contextlib.contextmanager
def activate(model) -> Iterator[torch.nn.Module]:
    """Run ``model`` with the ``"kivi"`` attention inside the block; restore its attention afterwards.

    Layers whose cache returns plain tensors (sliding windows, or no KIVI cache at all) still run SDPA, so calls
    without a KIVI cache may run while the block is open. Blocks on one model may overlap (threads): the first
    switches the attention, the last restores the one from before the first.
    """
    check_model(model)
    with _ACTIVE_LOCK:
        open_blocks, previous = _ACTIVE.get(id(model), (0, model.config._attn_implementation))
        if open_blocks == 0:
            model.set_attn_implementation(ATTENTION_NAME)
        _ACTIVE[id(model)] = (open_blocks + 1, previous)
    try:
        yield model
    finally:
        with _ACTIVE_LOCK:
            open_blocks, previous = _ACTIVE.pop(id(model))
            if open_blocks == 1:
                model.set_attn_implementation(previous)
            else:
                _ACTIVE[id(model)] = (open_blocks - 1, previous)
