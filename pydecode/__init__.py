"""pydecode: a decoding engine for causal language models whose generate() mirrors transformers'."""
from .generation import GenerateOutput, GenerationConfig, generate, patch, unpatch
from .ops.backends import backends
from .sampler import SampleOutput, Sampler, SamplingParams

__all__ = ["GenerateOutput", "GenerationConfig", "SampleOutput", "Sampler", "SamplingParams", "backends", "generate", "patch", "unpatch"]
__version__ = "0.1.0"
