"""The sampling op: temperature, top-k, top-p, min-p and the draw, on the fastest backend.

Backend contract (``reference``, ``native``, ``pydecode.triton_kernels.sampling``):
``top_k_top_p_sample(logits, temperature, top_k, top_p, min_p, seeds, step) -> tokens (B,) int64`` and
``top_k_top_p_sample_logprobs`` (the same arguments) ``-> (tokens, logprob, processed_logprob)``: the same draw and
the token's log-softmax under the input and under the processed logits. Per-row parameters are a Python scalar or a
(B,) tensor. The processing steps (:func:`process_logits`, the filters, the cutoffs, the dynamic temperature) and
:func:`sample_from_processed` are the op's torch path, also used directly where a strategy processes logits itself.
"""
from __future__ import annotations

import torch

from ..backends import register_op, resolve
from ..validation import check_logits, check_parameter, check_seeds
from . import reference
from .cutoffs import epsilon_filter, eta_filter, top_h_filter
from .dynatemp import dynamic_temperature
from .reference import min_p_filter, process_logits, sample_from_processed, top_k_filter, top_p_filter, typical_filter

__all__ = ["dynamic_temperature", "epsilon_filter", "eta_filter", "min_p_filter", "process_logits",
           "sample_from_processed", "sample_unchecked", "top_h_filter", "top_k_filter", "top_k_top_p_sample",
           "top_p_filter", "typical_filter"]

register_op("top_k_top_p_sample", __name__, "sampling")
register_op("top_k_top_p_sample_logprobs", __name__, "sampling")


def top_k_top_p_sample(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, *, seeds: torch.Tensor,
                       step: int = 0, typical_p=1.0, return_logprobs: bool = False, backend: str | None = None):
    """Draw one token per row from the processed distribution (and, fused into the same kernel, its logprobs).

    Parameters
    ----------
    logits : (B, V) float32/float16/bfloat16 tensor
    temperature : float >= 0 or (B,) tensor; 0 makes the row greedy (argmax)
    top_k : int >= 0 or (B,) tensor; 0 (or >= V) disables
    top_p : float in (0, 1] or (B,) tensor; 1 disables
    min_p : float in [0, 1] or (B,) tensor; 0 disables
    seeds : (B,) int64 tensor; with ``step`` it selects the counter-based random stream
    step : int, the decode step (the number of tokens generated so far)
    typical_p : float in (0, 1] or (B,) tensor; below 1 this runs on the reference path
    return_logprobs : also return the drawn tokens' log-probabilities
    backend : "auto" | "torch" | "cpp" | "triton" | "cuda"

    Returns
    -------
    (B,) int64 tensor of token ids, always in ``[0, V)``; with ``return_logprobs`` the tuple ``(tokens, logprob,
    processed_logprob)``, two (B,) float32 tensors: ``log_softmax`` at the token of the input logits and of the
    processed logits it was drawn from (equal on greedy rows; NaN on a row with no finite logit or a ``+inf`` one).
    """
    check_logits(logits)
    batch = logits.shape[0]
    temperature, top_k, top_p, min_p, typical_p = (
        check_parameter(name, value, batch) for name, value in (("temperature", temperature), ("top_k", top_k),
                                                                ("top_p", top_p), ("min_p", min_p),
                                                                ("typical_p", typical_p)))
    seeds = check_seeds(seeds, batch)
    if not isinstance(return_logprobs, bool):
        raise TypeError(f"return_logprobs must be a bool, got {type(return_logprobs).__name__}")
    return sample_unchecked(logits, temperature, top_k, top_p, min_p, seeds, step, typical_p, backend,
                            return_logprobs)


def sample_unchecked(logits, temperature, top_k, top_p, min_p, seeds, step, typical_p=1.0, backend=None,
                     return_logprobs=False, cutoffs=None):
    """:func:`top_k_top_p_sample` without argument checks, for the decode loop (parameters already validated).

    ``cutoffs`` (``top_h`` / ``epsilon`` / ``eta`` keywords, see :mod:`.cutoffs`), like ``typical_p``,
    runs on the reference path."""
    if cutoffs or isinstance(typical_p, torch.Tensor) or typical_p < 1.0:
        fn = reference.top_k_top_p_sample_logprobs if return_logprobs else reference.top_k_top_p_sample
        return fn(logits, temperature, top_k, top_p, min_p, seeds, step, typical_p, **(cutoffs or {}))
    _, fn = resolve("top_k_top_p_sample_logprobs" if return_logprobs else "top_k_top_p_sample", logits.device,
                    backend)
    return fn(logits, temperature, top_k, top_p, min_p, seeds, int(step))
