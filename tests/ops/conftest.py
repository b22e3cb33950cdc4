"""The ``backend`` fixture: every test that takes it runs once per backend usable on ``DEVICE``."""
import pytest
import torch

from pydecode.ops.backends import active_backends

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ALL_BACKENDS = ("torch", "cpp", "cuda", "triton")


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    if request.param not in active_backends(DEVICE):
        pytest.skip(f"backend {request.param} is not usable on {DEVICE} here")
    return request.param


@pytest.fixture
def device():
    return DEVICE
