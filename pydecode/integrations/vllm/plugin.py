"""vLLM's ``vllm.general_plugins`` entry point: with ``PYDECODE_VLLM_SAMPLER=1`` in the environment, vLLM's model
runner samples with :class:`~.sampler.PydecodeVllmSampler` (a :class:`pydecode.Sampler` underneath); without it,
nothing changes.

vLLM calls :func:`register` in each of its processes before it builds the model runner. The hook swaps the sampler
classes the model runners instantiate (v1; the GPU model runner v2 where CUDA is available: :mod:`.sampler_v2`)
and adds the v1 sampler's batch state (:class:`~.batch_slots.PydecodeSamplerState`) to the processors the v1 runner
builds. Neither is a stable vLLM API: the hook is pinned to the tested versions.
"""
from __future__ import annotations

import logging
import os

import torch

TESTED_VLLM_VERSIONS = ("0.32.0",)
ENABLE_VARIABLE = "PYDECODE_VLLM_SAMPLER"


def register() -> None:
    """Install pydecode's sampler into vLLM's v1 model runner when ``PYDECODE_VLLM_SAMPLER=1``."""
    flag = os.environ.get(ENABLE_VARIABLE, "0")
    if flag not in ("0", "1"):
        raise ValueError(f"{ENABLE_VARIABLE} must be 0 or 1, got {flag!r}")
    if flag == "0":
        return
    import vllm

    if vllm.__version__ not in TESTED_VLLM_VERSIONS:
        raise RuntimeError(f"{ENABLE_VARIABLE}=1: pydecode's vLLM sampler is tested with vLLM "
                           f"{', '.join(TESTED_VLLM_VERSIONS)}, not {vllm.__version__}; unset {ENABLE_VARIABLE} or "
                           "install a tested vLLM")
    from vllm.v1.worker import gpu_model_runner

    from .batch_slots import PydecodeSamplerState
    from .sampler import PydecodeVllmSampler

    build_logitsprocs = gpu_model_runner.build_logitsprocs

    def with_sampler_state(vllm_config, device, is_pin_memory, is_pooling_model, custom_logitsprocs=()):
        if not (is_pooling_model or vllm_config.speculative_config):  # those runs keep vLLM's sampler
            custom_logitsprocs = (*custom_logitsprocs, PydecodeSamplerState)
        return build_logitsprocs(vllm_config, device, is_pin_memory, is_pooling_model, custom_logitsprocs)

    gpu_model_runner.Sampler = PydecodeVllmSampler
    gpu_model_runner.build_logitsprocs = with_sampler_state
    if torch.cuda.is_available():  # the GPU model runner v2 (it does not run on CPU)
        from vllm.v1.worker.gpu import model_runner

        from .sampler_v2 import PydecodeV2Sampler

        model_runner.Sampler = PydecodeV2Sampler
    logging.getLogger("vllm.plugins.pydecode").info(
        "%s=1: vLLM's model runner samples with pydecode's PydecodeVllmSampler", ENABLE_VARIABLE)
