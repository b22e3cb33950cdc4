"""The compiled extension ``pydecode._C`` as the native adapters use it: its ops (``torch.ops.pydecode.*``, one
function for the cpp and cuda backends: torch dispatches on the tensors' device) and the argument pair each per-row
parameter becomes."""
from __future__ import annotations

import torch

import pydecode._C  # noqa: F401  (registers torch.ops.pydecode.*)

native_ops = torch.ops.pydecode


def scalar_pair(value, cast):
    """``(tensor, 0)`` for a (B,) tensor, ``(None, scalar)`` for a Python number."""
    return (value, cast(0)) if isinstance(value, torch.Tensor) else (None, cast(value))
