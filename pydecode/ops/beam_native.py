"""Adapter from the ``beam_topk`` backend contract to ``torch.ops.pydecode.beam_topk`` (cpp and cuda backends)."""
from __future__ import annotations

import torch

import pydecode._C  # noqa: F401  (registers torch.ops.pydecode.*)

from .reference.beam import beam_topk as reference_beam_topk

# The CUDA kernel keeps at most this many candidates per item in shared memory (kBeamTile in beam.cuh) and packs
# ``beam * V + token`` into 32 bits; beyond either, the cuda backend runs the reference on the same device.
CUDA_MAX_K = 1024
CUDA_MAX_FLAT_INDEX = 1 << 32


def beam_topk(logits, beam_scores, num_beams, k, log_softmax=True):
    """``(scores (B, k) float32, tokens (B, k) int64, beams (B, k) int64)``; see :func:`pydecode.ops.beam.beam_topk`."""
    return torch.ops.pydecode.beam_topk(logits, beam_scores, int(num_beams), int(k), bool(log_softmax))


def beam_topk_cuda(logits, beam_scores, num_beams, k, log_softmax=True):
    """The cuda backend: the kernel within its limits, the reference (same results, any ``k``) beyond them."""
    if k > CUDA_MAX_K or num_beams * logits.shape[1] >= CUDA_MAX_FLAT_INDEX:
        return reference_beam_topk(logits, beam_scores, num_beams, k, log_softmax)
    return beam_topk(logits, beam_scores, num_beams, k, log_softmax)


@torch.library.register_fake("pydecode::beam_topk")
def _beam_topk_fake(logits, beam_scores, num_beams, k, log_softmax):
    batch = logits.shape[0] // num_beams
    return (logits.new_empty(batch, k, dtype=torch.float32), logits.new_empty(batch, k, dtype=torch.int64),
            logits.new_empty(batch, k, dtype=torch.int64))
