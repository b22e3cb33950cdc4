"""pydecode's CUDA kernels, run on the CPU for tests.

The CUDA sources (``csrc/<op>/cuda.cu`` adapters, ``csrc/<op>/kernel.cuh`` kernels and the shared headers) are copied
with two rewrites (a ``<<<grid, block, shared, stream>>>`` launch becomes a call of ``cuda_emu::launch``, a
``__shared__`` declaration a reference into the block's shared memory) and compiled as C++ against the emulated
runtime of ``tests/support/cuda_emulator`` into an extension that registers them for torch's CUDA dispatch key, as the
real build does. :class:`EmulatedCuda` then sends the ``pydecode`` ops, called on CPU tensors, to those kernels.
Every emulated GPU thread runs its kernel code unchanged (barriers, warp shuffles and votes included), so the kernels'
logic is tested without a GPU; their speed, memory model and races that a barrier-to-barrier schedule hides are not.

``python tests/support/cuda_emulation.py --asan`` runs those tests again with the kernels and their adapters built under
AddressSanitizer and UndefinedBehaviorSanitizer (``PYDECODE_CUDA_EMULATION=asan``, the sanitizer's runtime
preloaded): a global-memory access out of a tensor's bounds, an integer division by zero or an out-of-range shift
then stops the run with a report (pass ``-s`` to see it). It runs the sampling properties too, 10 drawn cases each
(the ``sanitized`` hypothesis profile). That run also resumes a block's threads in a shuffled order
(``CUDA_EMU_ORDER=shuffle``; ``reverse`` is the other choice), which changes what a kernel missing a barrier
computes.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import os
import platform
import re
import shutil
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = Path(__file__).resolve().parent / "cuda_emulator"

_LAUNCH = re.compile(r"(?P<kernel>[\w:]+(?:<[\w:, ]*>)?)\s*<<<(?P<config>.*?)>>>\s*\((?P<args>.*?)\);", re.S)
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+(?:alignas\(\d+\)\s+)?(?P<type>[\w:]+)\s+(?P<name>\w+)\[\];")
_SHARED = re.compile(r"__shared__\s+(?:alignas\(\d+\)\s+)?(?P<body>[^;]+);")
_FIRST_DECLARATOR = re.compile(r"(?P<type>[\w:<>\s]+?)\s+(?P<rest>\w+\s*(?:\[[^\]]+\]\s*)*)")
_DECLARATOR = re.compile(r"\s*(?P<name>\w+)\s*(?P<dims>(?:\[[^\]]+\])*)\s*")


def rewrite(source: str, sites: itertools.count) -> str:
    """CUDA source -> C++ for the emulated runtime (launches and shared-memory declarations)."""
    source = _LAUNCH.sub(
        lambda m: f"::cuda_emu::launch([&] {{ {m['kernel']}({m['args']}); }}, {m['config']});", source)
    source = _EXTERN_SHARED.sub(
        lambda m: f"{m['type']}* {m['name']} = ::cuda_emu::dynamic_shared<{m['type']}>();", source)

    def shared(m: re.Match) -> str:
        first, *others = m["body"].split(",")
        head = _FIRST_DECLARATOR.fullmatch(first.strip())
        declarators = [_DECLARATOR.fullmatch(d) for d in ([head["rest"]] if head else []) + others]
        if head is None or None in declarators:
            raise ValueError(f"cannot rewrite the shared declaration {m[0]!r}")
        return " ".join(f"auto& {d['name']} = ::cuda_emu::shared_var<{head['type']}{d['dims']}>({next(sites)});"
                        for d in declarators)

    return _SHARED.sub(shared, source)


def _generate(out: Path) -> list[Path]:
    """Write the rewritten sources under ``out``; return the translation units."""
    sites = itertools.count()
    csrc = ROOT / "csrc"
    units = []
    adapters = sorted(csrc.glob("*/cuda.cu"))
    headers = sorted((csrc / "include" / "pydecode").iterdir()) + sorted(
        path for adapter in adapters for path in adapter.parent.iterdir() if path.suffix in (".h", ".cuh"))
    for path in headers + adapters:
        text = path.read_text()
        if path.suffix in (".cu", ".cuh"):
            text = rewrite(text, sites)
        # a translation unit per op, named after it: the extension builder names objects by file name
        relative = path.relative_to(csrc)
        target = out / (relative.with_name(f"{path.parent.name}_cuda.cpp") if path.suffix == ".cu" else relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text() != text:  # unchanged files keep their timestamps (ninja)
            target.write_text(text)
        if path.suffix == ".cu":
            units.append(target)
    return units


def supported(device: str) -> bool:
    """Whether the emulation runs here: CPU tensors (no GPU), x86-64 Linux, the C++ extension built."""
    from pydecode.ops.backends import extension_loaded

    return device == "cpu" and sys.platform == "linux" and platform.machine() == "x86_64" and extension_loaded()


def _sanitized() -> bool:
    variant = os.environ.get("PYDECODE_CUDA_EMULATION", "")
    if variant not in ("", "asan"):
        raise ValueError(f"PYDECODE_CUDA_EMULATION must be unset or 'asan', got {variant!r}")
    return variant == "asan"


@functools.lru_cache(maxsize=None)
def load() -> None:
    """Build (cached by ninja) and load the emulated CUDA kernels of this checkout."""
    from torch.utils.cpp_extension import load as load_extension

    import pydecode._C  # noqa: F401  (defines the ops' schemas)

    asan = _sanitized()
    suffix = "_asan" if asan else ""
    build = ROOT / "build" / f"cuda_emulated{suffix}"
    units = _generate(build / "csrc")
    runtime = build / "runtime.cpp"
    if not runtime.exists() or runtime.read_bytes() != (EMULATOR / "runtime.cpp").read_bytes():
        shutil.copyfile(EMULATOR / "runtime.cpp", runtime)
    load_extension(
        name=f"pydecode_cuda_emulated{suffix}",
        sources=[str(u) for u in units] + [str(build / "runtime.cpp")],
        extra_include_paths=[str(EMULATOR / "include"), str(build / "csrc" / "include")],
        extra_cflags=["-O2", "-fvisibility=hidden"] + (
            ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
            if asan else []),
        extra_ldflags=["-fsanitize=address,undefined"] if asan else [],
        build_directory=str(build),
        is_python_module=False,
    )


class EmulatedCuda(TorchDispatchMode):
    """While active, a ``pydecode`` op with a CUDA kernel runs that kernel (emulated) on its CPU tensors."""

    _CUDA = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "pydecode" and func.has_kernel_for_dispatch_key(torch._C.DispatchKey.CUDA):
            return func.redispatch(self._CUDA, *args, **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def cuda_backend_on_cpu():
    """The ``cuda`` backend made usable on CPU tensors, through the emulated kernels."""
    backends = importlib.import_module("pydecode.ops.backends")  # pydecode.ops.backends is also a function's name
    load()
    usable = backends._backend_usable

    def patched(backend: str, device_type: str) -> bool:
        return True if (backend, device_type) == ("cuda", "cpu") else usable(backend, device_type)

    backends._backend_usable = patched
    try:
        with EmulatedCuda():
            yield
    finally:
        backends._backend_usable = usable


def _run_sanitized(pytest_args: list[str]) -> int:
    """The emulated-CUDA tests under AddressSanitizer, in a child process that preloads its runtime."""
    import subprocess

    runtime = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True,
                             check=True).stdout.strip()
    env = {"CUDA_EMU_ORDER": "shuffle", **os.environ, "PYDECODE_CUDA_EMULATION": "asan", "LD_PRELOAD": runtime,
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"}
    tests = ["tests/ops", "tests/cache", "tests/generation/test_every_backend.py", "-k", "cuda-emulated",
             "tests/properties/test_sampling_properties.py", "--hypothesis-profile=sanitized"]
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, *pytest_args],
                           cwd=ROOT, env=env)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--asan"]:
        sys.exit("usage: python tests/support/cuda_emulation.py --asan [pytest arguments]")
    sys.exit(_run_sanitized(sys.argv[2:]))
