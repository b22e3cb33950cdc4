"""Pure-PyTorch reference of the ``decode_linear`` op: a linear layer on a few rows."""
from __future__ import annotations

import torch


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` for ``x`` (M, K), ``weight`` (N, K) and ``bias`` (N,) or None, all float32 or all
    bfloat16: (M, N) in their dtype, summed in float32 and rounded once."""
    out = torch.nn.functional.linear(x.float(), weight.float(), None if bias is None else bias.float())
    return out.to(x.dtype)
