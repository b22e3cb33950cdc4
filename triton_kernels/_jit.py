"""``device_function``: the decorator of the Triton helpers that kernels call."""
import os

import triton

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def device_function(fn):
    """``triton.jit`` on a GPU. Under the interpreter the plain function: it then runs inside the interpreted kernel,
    where ``triton.language`` is already patched, instead of re-patching it on every call (~1 ms each, which made
    the interpreter several times slower on helper-heavy kernels)."""
    return fn if INTERPRET else triton.jit(fn)
