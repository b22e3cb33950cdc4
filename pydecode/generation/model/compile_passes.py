"""Inductor graph passes for the compiled decoding step on the CPU (installed by :func:`inductor_patch`).

After AOT autograd the step reaches Inductor as an aten graph. Two rewrites make its float32 CPU decode memory-bound
instead of copy- and GEMM-bound:

- **few-row matmuls**: a linear layer ``F.linear(x, w, b)`` arrives as ``mm(x2d, permute(w, [1, 0]))`` or
  ``addmm(b, x2d, permute(w, [1, 0]))``; where the tensors are float32 on the CPU (or bfloat16 where the CPU has
  AVX-512 BF16) and ``x2d`` has at most :data:`MAX_ROWS` rows of its dtype it becomes
  ``torch.ops.pydecode.decode_linear(x2d, w, b)`` (:mod:`pydecode.ops.linear`).
- **grouped-query attention without copies**: under compilation transformers repeats each key / value head for its
  query heads (``reshape(clone(expand(unsqueeze(kv, 2))))``) over the whole static cache before SDPA; the CPU flash
  kernel takes fewer key / value heads than query heads itself, so the repeat is dropped (same values, bit for bit).

Every other node is left to Inductor.
"""
from __future__ import annotations

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from ...ops.backends import requested_backend, resolve

# the most rows decode_linear takes per dtype: above them torch's GEMM (oneDNN) is as fast or faster on this project's
# AVX-512 machine (benchmarks/README.md: decode_linear)
MAX_ROWS = {torch.float32: 64, torch.bfloat16: 4}

_aten = torch.ops.aten
_RESHAPES = (_aten.reshape.default, _aten.view.default, _aten._unsafe_view.default)
_CPU_FLASH = _aten._scaled_dot_product_flash_attention_for_cpu.default


def _value(node):
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _call(node, *targets) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target in targets


def _on_cpu(node, dims: int, dtypes) -> bool:
    value = _value(node)
    return (isinstance(value, torch.Tensor) and value.dim() == dims and value.dtype in dtypes
            and value.device.type == "cpu")


def _transposed_weight(node, dtype):
    """``w`` when ``node`` is ``permute(w, [1, 0])`` (or ``t(w)``) of a contiguous 2-D CPU tensor of ``dtype``."""
    if _call(node, _aten.t.default):
        weight = node.args[0]
    elif _call(node, _aten.permute.default) and list(node.args[1]) == [1, 0]:
        weight = node.args[0]
    else:
        return None
    return weight if _on_cpu(weight, 2, (dtype,)) and _value(weight).is_contiguous() else None


def linear_arguments(node, dtypes=(torch.float32,)) -> tuple | None:
    """The ``decode_linear`` arguments that replace ``node`` (rows of one of ``dtypes``), or None to leave it."""
    if node.kwargs:
        return None
    if _call(node, _aten.mm.default):
        bias, rows, transposed = None, *node.args
    elif _call(node, _aten.addmm.default) and len(node.args) == 3:
        bias, rows, transposed = node.args
    else:
        return None
    if not _on_cpu(rows, 2, dtypes) or _value(rows).shape[0] > MAX_ROWS[_value(rows).dtype]:
        return None
    dtype = _value(rows).dtype
    weight = _transposed_weight(transposed, dtype)
    if weight is None or (bias is not None and not _on_cpu(bias, 1, (dtype,))):
        return None
    return rows, weight, bias


def unrepeated_heads(node):
    """``(kv, repeats)`` when ``node`` is ``reshape(clone(expand(unsqueeze(kv, 2), [b, h, r, s, d])), [b, h*r, s,
    d])``, else None."""
    clone = node.args[0] if _call(node, *_RESHAPES) else None
    expand = clone.args[0] if _call(clone, _aten.clone.default) else None
    unsqueeze = expand.args[0] if _call(expand, _aten.expand.default) else None
    if not (_call(unsqueeze, _aten.unsqueeze.default) and unsqueeze.args[1] == 2):
        return None
    kv = unsqueeze.args[0]
    if _value(kv) is None or _value(kv).dim() != 4 or _value(node).dim() != 4:
        return None
    return kv, _value(node).shape[1] // _value(kv).shape[1]


class DecodeStepPasses(CustomGraphPass):
    """Both rewrites of the module docstring, in one post-grad pass; ``counts`` says how many nodes each changed."""

    def __init__(self, linear: bool, bf16: bool = False):
        self.linear = linear
        self.dtypes = (torch.float32, torch.bfloat16) if bf16 else (torch.float32,)
        self.counts = {"decode_linear": 0, "gqa_attention": 0}

    def __call__(self, graph: torch.fx.Graph) -> None:
        for node in list(graph.nodes):
            if _call(node, _CPU_FLASH):
                self._attention(node)
            elif self.linear:
                self._linear(graph, node)
        graph.eliminate_dead_code()

    def _linear(self, graph, node) -> None:
        args = linear_arguments(node, self.dtypes)
        if args is None:
            return
        with graph.inserting_before(node):
            new = graph.call_function(torch.ops.pydecode.decode_linear.default, args)
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        self.counts["decode_linear"] += 1

    def _attention(self, node) -> None:
        key, value = unrepeated_heads(node.args[1]), unrepeated_heads(node.args[2])
        if key is None or value is None or key[1] != value[1]:
            return
        node.args = (node.args[0], key[0], value[0], *node.args[3:])
        self.counts["gqa_attention"] += 1

    def uuid(self) -> bytes:
        return get_hash_for_files((__file__,)) + bytes([self.linear, len(self.dtypes)])


def inductor_patch(device: torch.device, backend: str | None, decode_linear: bool) -> dict:
    """Inductor config to compile a decoding step on ``device`` with: on the CPU the passes above (the matmul
    rewrite when ``decode_linear`` and the ``cpp`` backend runs the op, auto or asked for; bfloat16 matmuls too where
    that backend has AVX-512 BF16 dot products); elsewhere nothing."""
    if device.type != "cpu":
        return {}
    asked = requested_backend(backend)
    linear = decode_linear and asked in ("auto", "cpp") and resolve("decode_linear", device, asked)[0] == "cpp"
    bf16 = linear and bool(torch.ops.pydecode.bf16_dot_products())
    return {"post_grad_custom_post_pass": DecodeStepPasses(linear, bf16)}
