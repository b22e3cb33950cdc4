"""pydecode: a decoding engine for causal language models whose generate() mirrors transformers'.

The names below load on first use, so ``pydecode --help`` and ``import pydecode.cli`` do not import torch.
"""
import importlib

_EXPORTS = {
    "GenerateOutput": ".generation", "GenerationConfig": ".generation", "generate": ".generation",
    "patch": ".generation", "unpatch": ".generation", "backends": ".ops.backends",
    "SamplingParams": ".sampler", "Sampler": ".sampler", "SampleOutput": ".sampler",
    "LLM": ".llm", "Completion": ".completion",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pydecode' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
