"""pydecode: a decoding engine for causal language models whose generate() mirrors transformers'."""
from .ops.backends import backends

__all__ = ["backends"]
__version__ = "0.1.0"
