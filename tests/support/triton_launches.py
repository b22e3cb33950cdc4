"""Triton kernels compiled ahead of time for real GPUs, with the argument types the tests launched them with.

CI has no GPU: the kernels run under the Triton interpreter, which accepts code that Triton's compiler rejects (a
global that is not a constexpr, a constexpr assigned twice in an unrolled loop, a loop variable whose type changes).
:func:`record` (installed by tests/conftest.py) notes every interpreted launch as a GPU would make it: kernel,
argument types, constexpr values and launch options, with a GPU's block sizes and code paths where they differ
(``launch_constants`` in triton_kernels/_jit.py). tests/test_triton_compiles.py then runs this file as a script,
without the interpreter, to compile each launch for sm_90 and sm_80 (the ``--arch`` list) with Triton's own compiler,
which needs no GPU.

    python tests/support/triton_launches.py LAUNCHES.json [--arch 90 80]
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

LAUNCH_OPTIONS = ("num_warps", "num_stages")


def _arg_type(value) -> str:
    """Triton's signature type of a launch argument that is not a constexpr."""
    import torch

    if isinstance(value, torch.Tensor):
        return "*" + {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int64: "i64",
                      torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8",
                      torch.bool: "i1"}[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for a launch argument of type {type(value).__name__}")


def _is_constexpr(annotation) -> bool:
    """``tl.constexpr``, also as the string a module with ``from __future__ import annotations`` leaves."""
    import triton.language as tl

    return annotation is tl.constexpr or annotation in ("tl.constexpr", "triton.language.constexpr", "constexpr")


def describe(fn, args: tuple, kwargs: dict) -> str:
    """One launch of the Python kernel ``fn`` as a JSON key: module, name, signature, constexprs, options."""
    params = inspect.signature(fn).parameters
    values = dict(zip(params, args))
    values.update((k, v) for k, v in kwargs.items() if k in params)
    signature, constexprs = {}, {}
    for name, param in params.items():
        value = values.get(name, param.default)
        if _is_constexpr(param.annotation) or value is None:
            signature[name] = "constexpr"
            constexprs[name] = value
        else:
            signature[name] = _arg_type(value)
    options = {k: v for k, v in kwargs.items() if k in LAUNCH_OPTIONS}
    return json.dumps([fn.__module__, fn.__name__, signature, constexprs, options])


def record() -> set[str]:
    """Note every interpreted kernel launch from now on, with the constants a GPU would give it
    (``launch_constants``); returns the (growing) set of launch keys."""
    from triton.runtime.interpreter import InterpretedFunction

    from pydecode.triton_kernels import _jit

    launches: set[str] = set()
    run = InterpretedFunction.run

    def recording_run(self, *args, grid, warmup, **kwargs):
        on_gpu = {**kwargs, **_jit.GPU_CONSTANTS}
        _jit.GPU_CONSTANTS.clear()
        launches.add(describe(self.fn, args, on_gpu))
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording_run
    return launches


def compile_launch(launch: str, arch: int) -> str | None:
    """Compile one recorded launch for sm_<arch>; the error (kernel, constexprs, message) or None."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, name, signature, constexprs, options = json.loads(launch)
    kernel = getattr(importlib.import_module(module), name)
    try:
        triton.compile(ASTSource(kernel, signature, constexprs), target=GPUTarget("cuda", arch, 32), options=options)
    except Exception as error:  # noqa: BLE001 - every failure is reported, with its innermost cause
        while error.__cause__ is not None:
            error = error.__cause__
        return f"sm_{arch} {name} {constexprs} {options}:\n{error}"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("launches", help="JSON list of recorded launches")
    parser.add_argument("--arch", type=int, nargs="+", default=[90])
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("compile without TRITON_INTERPRET=1: the kernels must be real triton.jit functions")
    with open(args.launches) as f:
        launches = json.load(f)
    jobs = [(launch, arch) for arch in args.arch for launch in launches]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        errors = [e for e in pool.map(compile_launch, *zip(*jobs)) if e]
    print(f"{len(jobs) - len(errors)} of {len(jobs)} launches compiled (sm_{', sm_'.join(map(str, args.arch))})")
    for error in errors:
        print(f"\n{error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
