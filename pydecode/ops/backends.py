"""Backend registry: which implementation of each op runs, and how a user forces one.

Backends, fastest first for each device type:

- CUDA tensors: ``cuda`` (C++/CUDA extension) > ``triton`` > ``torch``
- CPU tensors:  ``cpp`` (C++/OpenMP extension) > ``torch``; ``triton`` only when asked for by name (it then runs
  under the Triton interpreter, which needs ``TRITON_INTERPRET=1`` set before triton is imported).

``torch`` is the pure-PyTorch reference: always present, the fallback and the oracle of every kernel test.
The ``cpp`` backend's hottest loops (KIVI attention) also come in an AVX2 + FMA variant chosen at run time when the
CPU has it (:func:`cpu_isa`); :func:`forced_cpu_isa` runs the portable variant instead.
A backend is forced with the ``backend=`` argument of an op or of :func:`pydecode.generate`, or for the whole
process with the environment variable ``PYDECODE_BACKEND`` (read once per :func:`pydecode.generate` call). Forcing
one that cannot run raises ``RuntimeError`` with the cause; when ``auto`` passes over a faster backend that cannot run
here, the reason is logged once (logger ``pydecode.ops``, level WARNING).
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import threading
from typing import Callable, Iterator

import torch

BACKEND_NAMES = ("auto", "torch", "cpp", "triton", "cuda")
_AUTO_ORDER = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpp", "torch")}

# op name -> backend name -> "module:function" (imported lazily so a missing extension never breaks import)
_REGISTRY: dict[str, dict[str, str]] = {}


def register(op: str, backend: str, target: str) -> None:
    """Register ``target`` ("module:function") as ``backend``'s implementation of ``op``."""
    if backend not in BACKEND_NAMES[1:]:
        raise ValueError(f"backend must be one of {BACKEND_NAMES[1:]}, got {backend!r}")
    _REGISTRY.setdefault(op, {})[backend] = target


def registered_targets() -> list[tuple[str, str, str]]:
    """Every registration as ``(op, backend, "module:function")``."""
    return [(op, backend, target) for op, impls in _REGISTRY.items() for backend, target in impls.items()]


def register_op(op: str, package: str, triton_module: str | None, *, cuda: bool = True) -> None:
    """Register the backends of ``op`` where an op package keeps them, each function named ``op``: the ``torch``
    reference in ``<package>.reference``, the ``cpp`` and (unless ``cuda`` is False: a CPU-only kernel) ``cuda``
    adapters in ``<package>.native``, and the ``triton`` launcher in ``pydecode.triton_kernels.<triton_module>``
    (none when ``triton_module`` is None)."""
    register(op, "torch", f"{package}.reference:{op}")
    register(op, "cpp", f"{package}.native:{op}")
    if cuda:
        register(op, "cuda", f"{package}.native:{op}")
    if triton_module is not None:
        register(op, "triton", f"pydecode.triton_kernels.{triton_module}:{op}")


_LOG = logging.getLogger("pydecode.ops")


@functools.lru_cache(maxsize=None)
def load_target(target: str) -> tuple[Callable | None, Exception | None]:
    """``(function, None)`` for a registered ``"module:function"``, or ``(None, the error)`` when it cannot load."""
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name), None
    except (ImportError, AttributeError, OSError, RuntimeError) as error:
        return None, error


@functools.lru_cache(maxsize=None)
def _warn_fallback(op: str, device_type: str, backend: str, reason: str) -> None:
    _LOG.warning("pydecode: op %r on %s tensors skips backend %r: %s", op, device_type, backend, reason)


@functools.lru_cache(maxsize=None)
def extension_loaded() -> bool:
    """True when the compiled extension ``pydecode._C`` imports."""
    try:
        importlib.import_module("pydecode._C")
        return True
    except (ImportError, OSError):
        return False


@functools.lru_cache(maxsize=None)
def extension_has_cuda() -> bool:
    """True when the compiled extension was built with its CUDA kernels."""
    if not extension_loaded():
        return False
    return bool(torch.ops.pydecode.built_with_cuda())


def cpu_isa() -> str | None:
    """The instruction set the ``cpp`` backend's vector loops use: ``"avx2"`` or ``"baseline"`` (None without the
    extension)."""
    return str(torch.ops.pydecode.cpu_isa()) if extension_loaded() else None


_ISA_HOLDER = threading.Lock()
_isa_owner: list = [None, 0]  # [thread ident holding the switch, how deep its blocks nest]


@contextlib.contextmanager
def forced_cpu_isa(isa: str) -> Iterator[str]:
    """Within the block the ``cpp`` kernels use ``isa``: ``"baseline"`` (the portable loops) or ``"auto"`` (the
    fastest the CPU runs). Yields the instruction set in use.

    A process-wide switch, not thread-local (it is meant for tests and comparisons): blocks nest in one thread, but
    while one thread holds the switch another thread entering a block raises ``RuntimeError`` instead of changing
    the first one's kernels."""
    if isa not in ("auto", "baseline"):
        raise ValueError(f"isa must be 'auto' or 'baseline', got {isa!r}")
    if not extension_loaded():
        raise RuntimeError("the compiled extension pydecode._C is not available")
    me = threading.get_ident()
    with _ISA_HOLDER:
        if _isa_owner[0] not in (None, me):
            raise RuntimeError("forced_cpu_isa is a process-wide switch held by another thread; it cannot be used "
                               "from two threads at once")
        _isa_owner[:] = [me, _isa_owner[1] + 1]
    try:
        previous = str(torch.ops.pydecode.set_cpu_isa(isa))
        try:
            yield cpu_isa()
        finally:
            torch.ops.pydecode.set_cpu_isa(previous)
    finally:
        with _ISA_HOLDER:
            _isa_owner[:] = [me, _isa_owner[1] - 1] if _isa_owner[1] > 1 else [None, 0]


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when triton imports (on CPU it is usable only under ``TRITON_INTERPRET=1``)."""
    try:
        importlib.import_module("triton")
        return True
    except ImportError:
        return False


def _backend_usable(backend: str, device_type: str) -> bool:
    if backend == "torch":
        return True
    if backend == "cpp":
        return device_type == "cpu" and extension_loaded()
    if backend == "cuda":
        return device_type == "cuda" and extension_has_cuda()
    if backend == "triton":
        if not triton_available():
            return False
        return device_type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    return False


def unusable_reason(backend: str, device_type: str) -> str | None:
    """Why ``backend`` cannot run on ``device_type`` here and what to do instead; None when it can."""
    if _backend_usable(backend, device_type):
        return None
    if backend == "triton" and not triton_available():
        return "triton is not installed (pip install triton), or use backend 'cpp' or 'torch'"
    if backend == "triton":
        return ("Triton kernels run on CUDA devices; on the CPU only under the Triton interpreter: set "
                "TRITON_INTERPRET=1 (slow, for testing), or use backend 'cpp' or 'torch'")
    if backend == "cpp" and device_type != "cpu":
        return "the C++ kernels run on the CPU: use backend 'cuda', 'triton' or 'torch' on a GPU"
    if backend == "cpp":
        return ("the compiled extension pydecode._C did not load: reinstall with "
                "pip install --no-build-isolation -e . (see the README), or use backend 'torch'")
    if backend == "cuda" and device_type != "cuda":
        return "the CUDA kernels need a CUDA device: use backend 'cpp' or 'torch' on the CPU"
    return ("the extension was built without CUDA kernels (torch without CUDA, or no nvcc at build time): rebuild "
            "it where nvcc is found, or use backend 'triton' or 'torch'")


def requested_backend(backend: str | None = None) -> str:
    """The backend asked for: the argument, else ``PYDECODE_BACKEND``, else ``"auto"``."""
    name = backend or os.environ.get("PYDECODE_BACKEND") or "auto"
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    return name


def resolve(op: str, device: torch.device | str, backend: str | None = None) -> tuple[str, Callable]:
    """Return ``(backend_name, function)`` implementing ``op`` for tensors on ``device``.

    ``backend`` None reads ``PYDECODE_BACKEND``; the decode loop passes the name its call resolved once. While
    ``torch.compile`` traces a call, the answer is the one the last eager call with these arguments got (tracing
    cannot run the imports that find the backends; a compiled decode step runs its ops eagerly first)."""
    device_type = torch.device(device).type
    if torch.compiler.is_compiling():
        return _RESOLVED[(op, device_type, backend)]
    _RESOLVED[(op, device_type, backend)] = found = _resolve(op, device_type, backend)
    return found


_RESOLVED: dict[tuple, tuple[str, Callable]] = {}  # (op, device type, backend argument) -> the last eager answer


def _resolve(op: str, device_type: str, backend: str | None) -> tuple[str, Callable]:
    name = requested_backend(backend)
    impls = _REGISTRY.get(op, {})
    if name != "auto":
        reason = unusable_reason(name, device_type) if name in impls else "no implementation registered"
        fn, error = load_target(impls[name]) if reason is None else (None, None)
        if fn is None:
            reason = reason or f"{impls[name]} failed to load ({type(error).__name__}: {error})"
            raise RuntimeError(
                f"backend {name!r} cannot run op {op!r} on {device_type} tensors here: {reason} "
                f"(active backends: {', '.join(active_backends(device_type))})"
            ) from error
        return name, fn
    for candidate in _AUTO_ORDER.get(device_type, ("torch",)):
        if candidate not in impls:
            continue
        reason = unusable_reason(candidate, device_type)
        fn, error = load_target(impls[candidate]) if reason is None else (None, None)
        if fn is not None:
            return candidate, fn
        _warn_fallback(op, device_type, candidate,
                       reason or f"{impls[candidate]} failed to load ({type(error).__name__}: {error})")
    raise RuntimeError(f"no backend implements op {op!r}")


def active_backends(device_type: str = "cpu") -> list[str]:
    """Backends that can run on ``device_type`` in this process."""
    return [b for b in BACKEND_NAMES[1:] if _backend_usable(b, device_type)]


def backends() -> dict[str, object]:
    """What this process can use: the backends per device and which op each backend implements."""
    device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return {
        "active": {d: active_backends(d) for d in device_types},
        "extension": extension_loaded(),
        "extension_cuda": extension_has_cuda(),
        "cpu_isa": cpu_isa(),
        "triton": triton_available(),
        "ops": {op: sorted(b for b, t in impls.items() if load_target(t)[0] is not None)
                for op, impls in _REGISTRY.items()},
    }
