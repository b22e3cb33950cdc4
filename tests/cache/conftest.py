"""Fixtures for the KIVI tests: ``backend`` runs a test once per backend usable on ``DEVICE``."""
import importlib.util
import os

import pytest
import torch

import pydecode
from pydecode.ops.backends import active_backends

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ALL_BACKENDS = ("torch", "cpp", "cuda", "triton")

# In a source checkout that is not pip-installed, `pydecode.triton_kernels` (installed from ./triton_kernels) is
# not on the path: let the pydecode package find it at the repository root.
if importlib.util.find_spec("pydecode.triton_kernels") is None:
    pydecode.__path__.append(os.path.dirname(os.path.dirname(pydecode.__file__)))


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    if request.param not in active_backends(DEVICE):
        pytest.skip(f"backend {request.param} is not usable on {DEVICE} here")
    return request.param


@pytest.fixture
def device():
    return DEVICE
