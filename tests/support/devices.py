"""Where the backend tests run: ``DEVICE`` is cuda on a GPU machine, else cpu. Tests build their inputs on the CPU
(seeded generators) and call the op through :func:`on_device`, which moves them there and the results back."""
import copy

import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _move(value, device):
    return value.to(device) if isinstance(value, torch.Tensor) else value


def to_device(value):
    """A tensor on ``DEVICE`` (for in-place ops); anything else unchanged."""
    return _move(value, DEVICE)


def on_device(fn, *args, **kwargs):
    """``fn`` with every tensor argument on ``DEVICE``; tensor results (also inside a tuple) back on the CPU."""
    out = fn(*[_move(a, DEVICE) for a in args], **{k: _move(v, DEVICE) for k, v in kwargs.items()})
    if isinstance(out, tuple):
        return tuple(_move(o, "cpu") for o in out)
    return _move(out, "cpu")


def model_on_device(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` itself on a CPU-only machine; a copy on ``DEVICE`` otherwise (the CPU original stays for others)."""
    return model if DEVICE == "cpu" else copy.deepcopy(model).to(DEVICE)
