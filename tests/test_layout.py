"""The package layout: pydecode's import graph (read with ``ast``, deferred imports included) has no cycle and its
arrows point down: strategies -> logits -> model -> (sampling, cache) -> ops -> kernels."""
from __future__ import annotations

import ast
import importlib
import pathlib
import types

import pytest

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1] / "pydecode"

# layer of a module = the rank of the longest prefix listed here; an import may only go to the same or a lower rank
LAYERS = {
    "pydecode._C": 0,
    "pydecode.triton_kernels": 0,
    "pydecode.ops": 1,
    "pydecode.sampling": 2,
    "pydecode.cache": 2,
    "pydecode.generation.model": 3,
    "pydecode.generation.logits": 4,
    "pydecode.generation.strategies": 5,
    "pydecode.generation.prepare": 6,
    "pydecode.generation.api": 7,
}


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: pathlib.Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """Module -> the pydecode modules it imports (a ``from package import name`` counts as the submodule when
    ``name`` is one)."""
    files = {module_name(p, root): p for p in root.rglob("*.py") if "triton_kernels" not in p.parts}
    known = set(files) | {"pydecode._C", "pydecode.triton_kernels"}
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target.startswith("pydecode") and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    done, stack = set(), []
    on_stack = set()

    def visit(node):
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_stack:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def layer(module: str) -> int | None:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    return LAYERS[max(prefixes, key=len)] if prefixes else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in graph.items():
        for target in targets:
            if layer(source) is not None and layer(target) is not None and layer(target) > layer(source):
                bad.append(f"{source} -> {target}")
    return sorted(bad)


def strategy_family(module: str) -> str | None:
    prefix = "pydecode.generation.strategies."
    return module[len(prefix):].split(".")[0] if module.startswith(prefix) else None


def sibling_strategy_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports from one strategy (or strategy family) into another."""
    return sorted(f"{s} -> {t}" for s, targets in graph.items() for t in targets
                  if strategy_family(s) and strategy_family(t) and strategy_family(s) != strategy_family(t))


def is_oracle(module: str) -> bool:
    """The ops' pure-PyTorch oracle: ``pydecode.ops.reference`` and each op package's ``reference`` module."""
    return module.startswith("pydecode.ops.") and "reference" in module.split(".")


def oracle_imports(graph: dict[str, set[str]]) -> list[str]:
    """Code outside the ops reaching into their oracle instead of the op packages' public functions."""
    return sorted(f"{s} -> {t}" for s, targets in graph.items() for t in targets
                  if not s.startswith("pydecode.ops") and is_oracle(t))


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_graph_sees_the_package(graph):
    assert "pydecode.generation.api" in graph and "pydecode.ops" in graph
    assert "pydecode.generation.model.runner" in graph["pydecode.generation.prepare"]


def test_no_import_cycle(graph):
    assert find_cycle(graph) is None


def test_imports_point_down(graph):
    assert upward_imports(graph) == []


def test_strategies_do_not_import_each_other(graph):
    assert sibling_strategy_imports(graph) == []


def test_only_the_ops_import_the_oracle(graph):
    assert oracle_imports(graph) == []


def test_checks_catch_planted_violations(tmp_path):
    """Each check fails on a tiny package that breaks its rule."""
    root = tmp_path / "pydecode"
    files = {
        "__init__.py": "",
        "ops/__init__.py": "from ..generation.model import runner\n",  # upward
        "ops/reference/__init__.py": "",
        "ops/sample/__init__.py": "from .reference import draw\n",  # the op's own reference: allowed
        "ops/sample/reference.py": "",
        "generation/__init__.py": "",
        "generation/model/__init__.py": "",
        "generation/model/runner.py": "def f():\n    from ...ops import reference\n",  # oracle, deferred
        "generation/strategies/__init__.py": "",
        "generation/strategies/beam.py": "from . import sample\n",  # sibling
        "generation/strategies/sample.py": "from .beam import x\n",  # cycle
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    planted = import_graph(root)
    assert find_cycle(planted) is not None
    assert upward_imports(planted) == ["pydecode.ops -> pydecode.generation.model.runner"]
    assert find_cycle({k: v for k, v in planted.items() if "strategies" not in k}) is None
    assert sibling_strategy_imports(planted) == ["pydecode.generation.strategies.beam -> "
                                                 "pydecode.generation.strategies.sample",
                                                 "pydecode.generation.strategies.sample -> "
                                                 "pydecode.generation.strategies.beam"]
    assert oracle_imports(planted) == ["pydecode.generation.model.runner -> pydecode.ops.reference"]


@pytest.mark.parametrize("package", ["pydecode.cache", "pydecode.generation", "pydecode.ops", "pydecode.sampler"])
def test_exported_names_are_not_shadowed_by_submodules(package):
    """A submodule named like a function its package exports replaces it once imported (import order decides)."""
    module = importlib.import_module(package)
    shadowed = [name for name in module.__all__ if isinstance(getattr(module, name), types.ModuleType)]
    assert shadowed == []
