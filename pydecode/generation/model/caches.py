"""The KV cache of one generate() call: the caller's, or the one ``cache_implementation`` names.

transformers' names build transformers' caches as its generate builds them: ``"dynamic"`` (pydecode's default: a
``DynamicCache`` whose layers are preallocated, :mod:`.preallocated_cache`), ``"offloaded"`` (a ``DynamicCache``
that keeps layers on the CPU between uses), ``"static"`` / ``"offloaded_static"`` (a ``StaticCache`` sized for the
call; the older hybrid / sliding-window names too) and ``"quantized"`` (``QuantizedCache``, quanto or HQQ backend,
from ``cache_config``). ``"kivi"`` is pydecode's 2/4-bit KIVI cache (:class:`pydecode.cache.KiviCache`).
"""
from __future__ import annotations

import copy

from transformers import DynamicCache, EncoderDecoderCache, QuantizedCache, StaticCache
from transformers.generation.configuration_utils import ALL_STATIC_CACHE_IMPLEMENTATIONS

from ...cache import make_cache
from .compat import USER_CACHE_KWARGS
from .no_cache import TokenHistory


def call_cache(config, model_kwargs: dict, model, rows: int, max_length: int, encoder_decoder: bool,
               encoder_length: int = 0):
    """The cache for ``rows`` rows up to ``max_length`` tokens, or None for pydecode's default; takes the caller's
    cache (``cache``, or ``past_key_values`` as transformers before 5.2x names it) out of ``model_kwargs``.
    ``encoder_length`` (encoder-decoder models) sizes a static cross-attention cache."""
    given = [model_kwargs.pop(name) for name in USER_CACHE_KWARGS if model_kwargs.get(name) is not None]
    name = config.cache_implementation
    if len(given) > 1:
        raise ValueError("pass the KV cache as either cache or past_key_values, not both")
    if given and name is not None:
        raise ValueError(f"pass either a cache or cache_implementation (got {name!r}), not both")
    if given:
        return given[0]
    if config.use_cache is False:  # transformers runs the whole sequence each step, without a cache
        return TokenHistory()
    if name in (None, "dynamic"):
        return None
    if name == "kivi":
        return make_cache("kivi", getattr(config, "cache_config", None), model, rows, max_length)
    text_config = model.config.get_text_config(decoder=True)
    if name in ALL_STATIC_CACHE_IMPLEMENTATIONS:
        size = max(max_length - 1, config.max_cache_len or 0)  # the last token is never fed back
        # as transformers: never smaller than the model's previous static cache (a compiled step keeps its shapes)
        size = model._previous_max_cache_length = max(size, getattr(model, "_previous_max_cache_length", -1))
        offloading = "offloaded" in name
        cache = StaticCache(config=text_config, max_cache_len=size, offloading=offloading)
        if encoder_decoder:  # as transformers: the cross-attention cache is sized for the encoder's outputs
            cross = StaticCache(config=text_config, max_cache_len=encoder_length, offloading=offloading)
            cache = EncoderDecoderCache(cache, cross)
        return cache
    if encoder_decoder:
        raise NotImplementedError(f"cache_implementation={name!r} is not supported on encoder-decoder models "
                                  "(supported there: 'dynamic', 'static', 'offloaded_static')")
    if name == "offloaded":
        return DynamicCache(config=text_config, offloading=True)
    if name == "quantized":
        options = copy.deepcopy(config.cache_config) if config.cache_config is not None else {}
        options.setdefault("config", text_config)
        return QuantizedCache(backend=options.pop("backend", "quanto"), **options)
    raise NotImplementedError(f"cache_implementation={name!r} is not supported by pydecode.generate (supported: "
                              "'dynamic', 'offloaded', 'static', 'offloaded_static', 'quantized', 'kivi')")
