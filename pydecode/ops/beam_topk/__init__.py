"""The beam top-k op: log-softmax + running beam score + top-k over all beams of a batch item, fused.

Backend contract (``reference``, ``native``, ``pydecode.triton_kernels.beam``):
``beam_topk(logits, beam_scores, num_beams, k, log_softmax) -> (scores, tokens, beams)``.
"""
from __future__ import annotations

import torch

from ..backends import register, register_op, resolve
from ..validation import check_logits

register_op("beam_topk", __name__, "beam")
register("beam_topk", "cuda", f"{__name__}.cuda:beam_topk")  # the kernel within its limits, the reference beyond


def beam_topk(logits: torch.Tensor, beam_scores: torch.Tensor, num_beams: int, k: int, *, log_softmax: bool = True,
              backend: str | None = None):
    """The ``k`` best continuations of each batch item over all its beams, in one pass over the logits.

    Parameters
    ----------
    logits : (B * num_beams, V) float32/float16/bfloat16; row ``b * num_beams + j`` is beam j of batch item b
    beam_scores : (B * num_beams,) float32, each beam's running log-probability
    num_beams : int >= 1
    k : int in [1, num_beams * V], candidates to keep per batch item (beam search uses ``2 * num_beams``)
    log_softmax : bool, normalise each row with log-softmax first (False: ``logits`` are already log-probs)
    backend : "auto" | "torch" | "cpp" | "triton" | "cuda" (its kernel keeps up to 1024 candidates per item; a larger
        ``k`` runs the reference on the GPU, with the same results)

    Returns
    -------
    scores (B, k) float32 in descending order (score = log-prob of the token + the beam's score), tokens (B, k)
    int64, beams (B, k) int64 source beam in [0, num_beams). Ties go to the smaller ``beam * V + token``; NaN
    counts as ``-inf``. No backend sorts the whole vocabulary.
    """
    check_logits(logits)
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    rows, vocab = logits.shape
    if rows % num_beams:
        raise ValueError(f"logits has {rows} rows, not a multiple of num_beams={num_beams}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_beams * vocab:
        raise ValueError(f"k must be an integer in [1, num_beams * vocab = {num_beams * vocab}], got {k!r}")
    if not isinstance(beam_scores, torch.Tensor) or beam_scores.shape != (rows,):
        raise ValueError(f"beam_scores must be a tensor of shape ({rows},)")
    if beam_scores.device != logits.device:
        raise ValueError("beam_scores must be on the device of logits")
    return beam_topk_unchecked(logits, beam_scores.to(torch.float32), num_beams, k, log_softmax, backend)


def beam_topk_unchecked(logits, beam_scores, num_beams: int, k: int, log_softmax: bool = True, backend=None):
    """:func:`beam_topk` without argument checks, for the decode loop."""
    _, fn = resolve("beam_topk", logits.device, backend)
    return fn(logits, beam_scores, int(num_beams), int(k), bool(log_softmax))
