"""The ``decode_linear`` op: a linear layer on the few rows of a decoding step, on the CPU in float32 or bfloat16.

A decoding step multiplies a handful of rows (the batch) by every weight matrix of the model once, so it is bound by
reading the weights; the ``cpp`` kernel streams each weight row once past all the rows in register tiles and reaches
the memory bandwidth where ``torch.mm`` on such shapes does not (bfloat16: with AVX-512 BF16 dot products where the
CPU has them, else portable loops). ``generate(compile=...)`` routes a compiled step's few-row CPU matmuls here
(:mod:`pydecode.generation.model.compile_passes`); eager decoding keeps transformers' own matmuls.

Backend contract (``reference``, ``native``): ``decode_linear(x (M, K), weight (N, K), bias (N,) or None) -> (M, N)``,
all float32 or all bfloat16, summed in float32 and rounded once.
"""
from __future__ import annotations

import torch

from ..backends import register_op, resolve

__all__ = ["decode_linear", "decode_linear_unchecked"]

register_op("decode_linear", __name__, None, cuda=False)  # a CPU kernel only: no CUDA or Triton one


def decode_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                  backend: str | None = None) -> torch.Tensor:
    """``x @ weight.T + bias``.

    Parameters
    ----------
    x : (M, K) float32 or bfloat16
        The rows (any M; the kernel pays for small M).
    weight : (N, K), x's dtype
    bias : (N,), x's dtype, or None

    Returns
    -------
    (M, N), x's dtype
    """
    for name, tensor, dims in (("x", x, 2), ("weight", weight, 2), ("bias", bias, 1)):
        if tensor is None and name == "bias":
            continue
        dtypes = (torch.float32, torch.bfloat16) if name == "x" else (x.dtype,)
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != dims or tensor.dtype not in dtypes:
            allowed = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
            raise TypeError(f"{name} must be a {dims}-D {allowed} tensor, got "
                            f"{getattr(tensor, 'dtype', type(tensor).__name__)} {tuple(getattr(tensor, 'shape', ()))}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must have shape (N, {x.shape[1]}) to match x, got {tuple(weight.shape)}")
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    if weight.device != x.device or (bias is not None and bias.device != x.device):
        raise ValueError(f"x, weight and bias must be on one device, got {x.device}, {weight.device}"
                         f"{'' if bias is None else ', ' + str(bias.device)}")
    return decode_linear_unchecked(x, weight, bias, backend)


def decode_linear_unchecked(x, weight, bias=None, backend=None):
    """:func:`decode_linear` without argument checks."""
    _, fn = resolve("decode_linear", x.device, backend)
    return fn(x, weight, bias)
