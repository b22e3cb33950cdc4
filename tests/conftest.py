"""Test-wide set-up: on a machine without a GPU, Triton kernels run under the interpreter."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
