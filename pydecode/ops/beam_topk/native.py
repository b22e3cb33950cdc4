"""Adapter from the ``beam_topk`` backend contract to ``torch.ops.pydecode.beam_topk`` (the cpp backend; the cuda
backend calls it through :mod:`.cuda`), and its fake implementation for ``torch.compile``."""
from __future__ import annotations

import torch

import pydecode._C  # noqa: F401  (registers torch.ops.pydecode.*)


def beam_topk(logits, beam_scores, num_beams, k, log_softmax=True):
    """``(scores (B, k) float32, tokens (B, k) int64, beams (B, k) int64)``; see :func:`..beam_topk`."""
    return torch.ops.pydecode.beam_topk(logits, beam_scores, int(num_beams), int(k), bool(log_softmax))


@torch.library.register_fake("pydecode::beam_topk")
def _beam_topk_fake(logits, beam_scores, num_beams, k, log_softmax):
    batch = logits.shape[0] // num_beams
    return (logits.new_empty(batch, k, dtype=torch.float32), logits.new_empty(batch, k, dtype=torch.int64),
            logits.new_empty(batch, k, dtype=torch.int64))
