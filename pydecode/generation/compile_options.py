"""The ``compile=`` argument of :func:`pydecode.generate`, checked, and the compiled steps kept between calls.

``compile`` is ``False`` (eager), ``True`` (the defaults) or a dict of:

- ``mode``: ``torch.compile``'s mode (default ``"reduce-overhead"``, CUDA graphs, on CUDA; Inductor's default on CPU)
- ``backend``: ``torch.compile``'s backend (default ``"inductor"``)
- ``options``: a dict of Inductor options; ``freezing`` and ``max_autotune`` may also be given at the top level
- ``stop_check_every``: read the "every row finished" flag every this many steps (default 8; 1 with a streamer)
- ``decode_linear``: on the CPU, run the step's float32 matmuls of up to 64 rows with pydecode's ``decode_linear``
  kernel (default True; :mod:`pydecode.ops.linear`)

Compiled steps live in :data:`COMPILED`, a weak dict keyed by the model (freed with the model, or by
:func:`clear_compiled`), then by the strategy's step, rows, cache bucket, dtype, device and options: a call with the
same key reuses the step, its graph, its static KV cache and its step state (refilled in place).
"""
from __future__ import annotations

import weakref

import torch

INDUCTOR_SHORTHANDS = ("freezing", "max_autotune")
KNOWN_KEYS = ("mode", "backend", "options", "stop_check_every", "decode_linear", *INDUCTOR_SHORTHANDS)
BUCKET = 128  # static cache lengths round up to a multiple of this; nearby lengths share a graph

COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_compile(value) -> dict | None:
    """``compile`` as a dict of its settings (None: eager); raises ``TypeError`` / ``ValueError`` naming it."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"compile must be a bool or a dict with keys from {KNOWN_KEYS}, got {type(value).__name__}")
    unknown = sorted(set(value) - set(KNOWN_KEYS))
    if unknown:
        raise ValueError(f"compile has unknown keys {unknown}; allowed: {KNOWN_KEYS}")
    mode = value.get("mode")
    if mode is not None and not isinstance(mode, str):
        raise TypeError(f"compile['mode'] must be a str or None, got {mode!r}")
    options = value.get("options", {})
    if not isinstance(options, dict):
        raise TypeError(f"compile['options'] must be a dict of Inductor options, got {type(options).__name__}")
    every = value.get("stop_check_every", 8)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"compile['stop_check_every'] must be an int >= 1, got {every!r}")
    if not isinstance(value.get("decode_linear", True), bool):
        raise TypeError(f"compile['decode_linear'] must be a bool, got {value['decode_linear']!r}")
    if (options or any(k in value for k in INDUCTOR_SHORTHANDS)) and mode is not None:
        raise ValueError("compile takes either 'mode' or Inductor options ('options', 'freezing', 'max_autotune'), "
                         "not both (torch.compile accepts only one of them)")
    return dict(value)


def compile_kwargs(settings: dict, device: torch.device) -> dict:
    """``torch.compile`` keywords for ``settings`` on ``device`` (one graph, fixed shapes)."""
    options = dict(settings.get("options", {}))
    options.update({k: settings[k] for k in INDUCTOR_SHORTHANDS if k in settings})
    kwargs = dict(fullgraph=True, dynamic=False, backend=settings.get("backend", "inductor"))
    if options:
        kwargs["options"] = options
    else:
        kwargs["mode"] = settings.get("mode", "reduce-overhead" if device.type == "cuda" else None)
    return kwargs


def cache_key(settings: dict, rows: int, bucket: int, dtype, device) -> tuple:
    """What a compiled step is reused for: same rows, bucket, dtype, device and options."""
    frozen = tuple(sorted((k, repr(v)) for k, v in settings.items() if k != "stop_check_every"))
    return rows, bucket, dtype, str(device), frozen


def bucket_for(length: int) -> int:
    """The static cache length for ``length`` positions: the next multiple of :data:`BUCKET`."""
    return -(-length // BUCKET) * BUCKET


def clear_compiled(model=None) -> None:
    """Drop the compiled steps (and their static caches) of ``model``, or of every model."""
    if model is None:
        COMPILED.clear()
    else:
        COMPILED.pop(model, None)
