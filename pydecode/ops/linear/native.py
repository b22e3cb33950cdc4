"""Adapter from the ``decode_linear`` backend contract to ``torch.ops.pydecode.decode_linear`` (the cpp backend),
and its fake implementation for ``torch.compile``."""
from __future__ import annotations

import torch

import pydecode._C  # noqa: F401  (registers torch.ops.pydecode.*)

_op = torch.ops.pydecode.decode_linear  # fails at import (backend unavailable) in an extension without it


def decode_linear(x, weight, bias=None):
    """(M, N) float32."""
    return _op(x, weight, bias)


@torch.library.register_fake("pydecode::decode_linear")
def _decode_linear_fake(x, weight, bias):
    return x.new_empty(x.shape[0], weight.shape[0])
