"""The output head's product for a few positions per row, on the CPU, as ``W @ h.T`` instead of ``h @ W.T``.

A verification forward of K + 1 positions projects K + 1 hidden states per row onto the vocabulary. On the CPU, fp32
``F.linear`` with 2 to 8 rows and a large (V, H) head runs a GEMM several times slower than its one-row GEMV (SmolLM2:
11 ms for one row, 40 ms for three), while ``torch.mm(W, h.T)`` takes 12 to 18 ms: one pass over the weight for all
rows. :func:`fast_output_head` is a ``TorchFunctionMode`` entered around such a forward: it routes that one product
(``F.linear`` whose weight is the model's output embedding) to ``torch.mm`` and runs every other call as it is. Same
product, another summation order: the logits differ in their last bits.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

MAX_ROWS = 8  # at 11 rows the two products cost about the same, and the mode adds a little to every call


class _HeadAsMatmul(TorchFunctionMode):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = weight

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.linear and len(args) > 1 and args[1] is self.weight:
            hidden, bias = args[0], args[2] if len(args) > 2 else kwargs.get("bias")
            flat = hidden.reshape(-1, hidden.shape[-1])
            out = torch.mm(self.weight, flat.t()).t().contiguous()  # laid out as F.linear's
            if bias is not None:
                out = out + bias
            return out.reshape(*hidden.shape[:-1], self.weight.shape[0])
        return func(*args, **kwargs)


def fast_output_head(model, rows: int):
    """A context for a forward whose head projects ``rows`` hidden states (all rows' kept positions): the mode above
    where it pays (CPU, float32, 2 to :data:`MAX_ROWS` of them, a linear output head), else nothing."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    if (not isinstance(head, torch.nn.Linear) or weight.device.type != "cpu" or weight.dtype != torch.float32
            or not 2 <= rows <= MAX_ROWS):
        return contextlib.nullcontext()
    return _HeadAsMatmul(weight)
