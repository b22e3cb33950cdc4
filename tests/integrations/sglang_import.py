"""Import SGLang's sampler plugin hook and ``CustomLogitProcessor`` on a CPU-only torch (run by setup_sglang.sh).

``sglang.srt.layers.sampler`` imports SGLang's multimodal configs, which import ``torchvision`` at module level; PyPI's
torchvision is a CUDA build that does not load against torch+cpu. transformers decides that torchvision is absent
first (so its image code stays off), then every ``torchvision.*`` import is served by a permissive stand-in module:
enough to import SGLang's real classes, not to run its multimodal code. Prints the two classes' locations.
"""
import importlib.machinery
import sys
import types


class _AnyMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _AnyMeta(name, (), {})


class _StandIn(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _AnyMeta(name, (), {})
        setattr(self, name, value)
        return value


class _TorchvisionStandIn:
    """A meta-path finder serving every ``torchvision.*`` module as a :class:`_StandIn`."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandIn(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def import_sglang():
    """(register_sampler_backend, CustomLogitProcessor) from the installed sglang."""
    from transformers.utils import import_utils

    if import_utils.is_torchvision_available():
        raise RuntimeError("a real torchvision is installed: import sglang directly")
    sys.meta_path.insert(0, _TorchvisionStandIn())
    from sglang.srt.layers.sampler import register_sampler_backend
    from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor

    return register_sampler_backend, CustomLogitProcessor


if __name__ == "__main__":
    register, processor = import_sglang()
    print(f"{register.__module__}.{register.__name__}, {processor.__module__}.{processor.__name__}")
