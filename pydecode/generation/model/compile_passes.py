"""Inductor graph passes for the compiled decoding step on the CPU (installed by :func:`inductor_patch`).

After AOT autograd the step reaches Inductor as an aten graph. Two rewrites make its float32 CPU decode memory-bound
instead of copy- and GEMM-bound:

- **few-row matmuls**: a linear layer ``F.linear(x, w, b)`` arrives as ``mm(x2d, permute(w, [1, 0]))`` or
  ``addmm(b, x2d, permute(w, [1, 0]))``; where ``x2d`` has at most :data:`MAX_ROWS` rows and the tensors are float32
  on the CPU it becomes ``torch.ops.pydecode.decode_linear(x2d, w, b)`` (:mod:`pydecode.ops.linear`).
- **grouped-query attention without copies**: under compilation transformers repeats each key / value head for its
  query heads (``reshape(clone(expand(unsqueeze(kv, 2))))``) over the whole static cache before SDPA; the CPU flash
  kernel takes fewer key / value heads than query heads itself, so the repeat is dropped (same values, bit for bit).

Every other node is left to Inductor.
"""
from __future__ import annotations

import torch
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files

from ...ops.backends import requested_backend, resolve

MAX_ROWS = 64  # above this many rows torch's GEMM is as fast (benchmarks/README.md: decode_linear)

_aten = torch.ops.aten
_RESHAPES = (_aten.reshape.default, _aten.view.default, _aten._unsafe_view.default)
_CPU_FLASH = _aten._scaled_dot_product_flash_attention_for_cpu.default


def _value(node):
    return node.meta.get("val") if isinstance(node, torch.fx.Node) else None


def _call(node, *targets) -> bool:
    return isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target in targets


def _cpu_float32(node, dims: int) -> bool:
    value = _value(node)
    return (isinstance(value, torch.Tensor) and value.dim() == dims and value.dtype == torch.float32
            and value.device.type == "cpu")


def _transposed_weight(node):
    """``w`` when ``node`` is ``permute(w, [1, 0])`` (or ``t(w)``) of a contiguous 2-D float32 CPU tensor."""
    if _call(node, _aten.t.default):
        weight = node.args[0]
    elif _call(node, _aten.permute.default) and list(node.args[1]) == [1, 0]:
        weight = node.args[0]
    else:
        return None
    return weight if _cpu_float32(weight, 2) and _value(weight).is_contiguous() else None


def linear_arguments(node) -> tuple | None:
    """The ``decode_linear`` arguments that replace ``node``, or None to leave it."""
    if node.kwargs:
        return None
    if _call(node, _aten.mm.default):
        bias, rows, transposed = None, *node.args
    elif _call(node, _aten.addmm.default) and len(node.args) == 3 and _cpu_float32(node.args[0], 1):
        bias, rows, transposed = node.args
    else:
        return None
    weight = _transposed_weight(transposed)
    if weight is None or not _cpu_float32(rows, 2) or _value(rows).shape[0] > MAX_ROWS:
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

    def __init__(self, linear: bool):
        self.linear = linear
        self.counts = {"decode_linear": 0, "gqa_attention": 0}

    def __call__(self, graph: torch.fx.Graph) -> None:
        for node in list(graph.nodes):
            if _call(node, _CPU_FLASH):
                self._attention(node)
            elif self.linear:
                self._linear(graph, node)
        graph.eliminate_dead_code()

    def _linear(self, graph, node) -> None:
        args = linear_arguments(node)
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
        return get_hash_for_files((__file__,)) + bytes([self.linear])


def inductor_patch(device: torch.device, backend: str | None, decode_linear: bool) -> dict:
    """Inductor config to compile a decoding step on ``device`` with: on the CPU the passes above (the matmul
    rewrite when ``decode_linear`` and the ``cpp`` backend runs the op, auto or asked for); elsewhere nothing."""
    if device.type != "cpu":
        return {}
    asked = requested_backend(backend)
    linear = decode_linear and asked in ("auto", "cpp") and resolve("decode_linear", device, asked)[0] == "cpp"
    return {"post_grad_custom_post_pass": DecodeStepPasses(linear)}
