"""The cuda backend of ``beam_topk``: the CUDA kernel within its limits, the reference (the same results, any ``k``)
on the same device beyond them."""
from __future__ import annotations

from . import native, reference

# The CUDA kernel keeps at most this many candidates per item in shared memory (kBeamTile in beam.cuh) and packs
# ``beam * V + token`` into 32 bits; beyond either, the cuda backend runs the reference on the same device.
CUDA_MAX_K = 1024
CUDA_MAX_FLAT_INDEX = 1 << 32


def beam_topk(logits, beam_scores, num_beams, k, log_softmax=True):
    """``(scores (B, k) float32, tokens (B, k) int64, beams (B, k) int64)``; see :func:`..beam_topk`."""
    if k > CUDA_MAX_K or num_beams * logits.shape[1] >= CUDA_MAX_FLAT_INDEX:
        return reference.beam_topk(logits, beam_scores, num_beams, k, log_softmax)
    return native.beam_topk(logits, beam_scores, num_beams, k, log_softmax)
