"""Sampling ops with interchangeable backends (torch reference, C++/OpenMP, CUDA, Triton)."""
from .backends import backends
from .logprobs import token_logprobs
from .penalties import apply_penalties_, record_tokens_
from .sample import top_k_top_p_sample

__all__ = ["apply_penalties_", "backends", "record_tokens_", "token_logprobs", "top_k_top_p_sample"]
