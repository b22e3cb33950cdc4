"""Pure-PyTorch reference of the ``decode_linear`` op: a linear layer on a few rows."""
from __future__ import annotations

import torch


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` for float32 ``x`` (M, K), ``weight`` (N, K) and ``bias`` (N,) or None: (M, N)."""
    return torch.nn.functional.linear(x, weight, bias)
