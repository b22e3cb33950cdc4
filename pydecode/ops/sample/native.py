"""The sampling op's cpp / cuda backend: adapters to ``torch.ops.pydecode.top_k_top_p_sample[_logprobs]`` and
their fake implementations for ``torch.compile``."""
from __future__ import annotations

import torch

from ..extension import native_ops, scalar_pair


def top_k_top_p_sample(logits, temperature, top_k, top_p, min_p, seeds, step) -> torch.Tensor:
    """Fused temperature -> top-k -> top-p -> min-p -> Gumbel-max draw; (B,) int64 token ids."""
    return native_ops.top_k_top_p_sample(logits, *_params(temperature, top_k, top_p, min_p), seeds, int(step))


def top_k_top_p_sample_logprobs(logits, temperature, top_k, top_p, min_p, seeds, step):
    """The same draw and the token's ``(logprob, processed_logprob)``: (B,) int64, (B,) float32, (B,) float32."""
    return native_ops.top_k_top_p_sample_logprobs(logits, *_params(temperature, top_k, top_p, min_p), seeds,
                                                  int(step))


def _params(temperature, top_k, top_p, min_p) -> tuple:
    return (*scalar_pair(temperature, float), *scalar_pair(top_k, int), *scalar_pair(top_p, float),
            *scalar_pair(min_p, float))


@torch.library.register_fake("pydecode::top_k_top_p_sample")
def _sample_fake(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p, min_p_val, seeds,
                 step):
    return logits.new_empty(logits.shape[0], dtype=torch.int64)


@torch.library.register_fake("pydecode::top_k_top_p_sample_logprobs")
def _sample_logprobs_fake(logits, *params):
    batch = logits.shape[0]
    return (logits.new_empty(batch, dtype=torch.int64), logits.new_empty(batch, dtype=torch.float32),
            logits.new_empty(batch, dtype=torch.float32))
