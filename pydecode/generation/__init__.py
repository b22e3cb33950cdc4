"""Decoding strategies over one shared model step and logits pipeline."""
from .api import generate, patch, unpatch
from .config import GenerationConfig
from .output import GenerateOutput

__all__ = ["GenerateOutput", "GenerationConfig", "generate", "patch", "unpatch"]
