"""``device_function``, the decorator of the Triton helpers that kernels call, and ``launch_constants``, the
launch constants that differ between a GPU and the interpreter."""
import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def device_function(fn):
    """``triton.jit`` on a GPU. Under the interpreter the plain function: it then runs inside the interpreted kernel,
    where ``triton.language`` is already patched, instead of re-patching it on every call (~1 ms each, which made
    the interpreter several times slower on helper-heavy kernels)."""
    return fn if INTERPRET else triton.jit(fn)


# Under the interpreter: the constants a GPU would give the next launch (read and cleared by
# tests/support/triton_launches.py, which compiles each launch the tests make as a GPU would make it).
GPU_CONSTANTS: dict = {}


def launch_constants(**choices) -> dict:
    """``name=(gpu value, interpreter value)`` -> ``name=value`` for where this runs: the interpreter pays per program,
    so it takes fewer, bigger blocks. Under the interpreter the GPU values are noted in ``GPU_CONSTANTS`` too."""
    if not INTERPRET:
        return {name: gpu for name, (gpu, _) in choices.items()}
    GPU_CONSTANTS.update((name, gpu) for name, (gpu, _) in choices.items())
    return {name: interpreted for name, (_, interpreted) in choices.items()}
