"""vLLM's GPU model runner v2 ``Sampler`` with pydecode's draw (the runner's engine does not run on CPU: tested
with stand-in batches against the real class).

The v2 runner keeps each request in a slot (``req_idx``) and hands the sampler device tensors only, so the adapter
is :class:`pydecode.Sampler` on the same slots:

1. vLLM's logits processors as the runner runs them (logit bias, penalties, bad words, then the custom ones, such
   as pydecode's bans and warpers from ``extra_args``) and the thinking-budget forcing;
2. ``Sampler.sample(logits, slots, positions)``: temperature (greedy below 1e-5), min-p, top-k -> top-p and the
   draw from the counter-based stream of ``(seed of the request, position)``; no value is read back to the host.

Logprobs stay vLLM's (of the raw logits). Processed-logprobs modes and the sampling-mask output go to vLLM's own
draw, unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from vllm.config.model import PROCESSED_LOGPROBS_MODES
from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsContext
from vllm.v1.worker.gpu.sample.sampler import Sampler as V2Sampler

from ...sampler import Sampler, SamplingParams
from ..processors import GREEDY_BELOW


def draw_params(params) -> SamplingParams:
    """The draw part of a vLLM ``SamplingParams`` (the runner's processors do the rest) as pydecode's."""
    greedy = params.temperature < GREEDY_BELOW
    return SamplingParams(temperature=0.0 if greedy else params.temperature, top_k=max(params.top_k, 0),
                          top_p=params.top_p, min_p=params.min_p, seed=params.seed)


class PydecodeV2Sampler(V2Sampler):
    """The v2 runner's ``Sampler`` (same constructor, ``add_request``, ``__call__``) drawing with pydecode."""

    def __init__(self, vllm_config, max_num_reqs: int, vocab_size: int, device, req_states, **kwargs):
        super().__init__(vllm_config, max_num_reqs, vocab_size, device, req_states, **kwargs)
        self.pydecode = Sampler(max_num_reqs, vocab_size, device)

    def add_request(self, req_idx: int, sampling_params) -> None:
        super().add_request(req_idx, sampling_params)
        self.pydecode.add_request(req_idx, draw_params(sampling_params), [])
        # the draw's temperature, min-p and top-k / top-p are pydecode's: the processors run for every request
        self.needs_logits_processing[req_idx] = True

    def sample(self, logits: torch.Tensor, expanded_idx_mapping: torch.Tensor, idx_mapping: torch.Tensor,
               idx_mapping_np: np.ndarray, pos: torch.Tensor, input_ids: torch.Tensor,
               expanded_local_pos: torch.Tensor, seq_lens_upper_bound_np: np.ndarray,
               return_logprobs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if self.return_sampling_mask or (return_logprobs and self.logprobs_mode in PROCESSED_LOGPROBS_MODES):
            return super().sample(logits, expanded_idx_mapping, idx_mapping, idx_mapping_np, pos, input_ids,
                                  expanded_local_pos, seq_lens_upper_bound_np, return_logprobs)
        processed = torch.empty_like(logits, dtype=torch.float32).copy_(logits)
        ctx = LogitsContext(expanded_idx_mapping=expanded_idx_mapping, idx_mapping=idx_mapping,
                            idx_mapping_np=idx_mapping_np, expanded_local_pos=expanded_local_pos,
                            input_ids=input_ids, pos=pos, seq_lens_upper_bound_np=seq_lens_upper_bound_np)
        for processor in self.logits_processors:
            processed = processor.apply(processed, ctx)
        self.thinking_budget_state.apply(processed, ctx)
        out = self.pydecode.sample(processed, expanded_idx_mapping, positions=pos.to(torch.int64))
        return out.token_ids, processed
