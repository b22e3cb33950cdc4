"""Decoding ops with interchangeable backends (torch reference, C++/OpenMP, CUDA, Triton), one package per op.

Each op package holds the public function (checks its arguments), its ``*_unchecked`` twin for the decode loop, the
torch ``reference`` (the fallback and the oracle of every kernel test), the ``native`` adapter to the compiled op
and its fake implementation, and its backend registration; the registry key, the function and the ``torch.ops``
op share one name.
"""
from . import beam_topk, degeneration, kivi, linear, verify  # noqa: F401  (register their backends)
from .backends import backends
from .logprobs import token_logprobs
from .penalties import apply_penalties_, record_tokens_
from .sample import top_k_top_p_sample

__all__ = ["apply_penalties_", "backends", "record_tokens_", "token_logprobs", "top_k_top_p_sample"]
