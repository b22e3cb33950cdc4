"""pydecode: a decoding engine for causal language models whose generate() mirrors transformers'."""
from .generation import GenerateOutput, GenerationConfig, generate, patch, unpatch
from .ops.backends import backends

__all__ = ["GenerateOutput", "GenerationConfig", "backends", "generate", "patch", "unpatch"]
__version__ = "0.1.0"
