"""A drop-in for vLLM's v1 ``Sampler`` that samples with :class:`pydecode.Sampler`.

The per-request state lives in :class:`~.batch_slots.PydecodeSamplerState`, which follows vLLM's persistent batch
(each request in a ``Sampler`` slot, its ``SamplingParams`` converted once at admission). Each step:

1. the steps outside ``pydecode.Sampler``'s per-request state, on a copy of the logits when there are any: the
   allowed-token mask, vLLM's (string) bad words and the processors that can change the argmax, pydecode's bans
   (:class:`~.logits_processors.PydecodeBansProcessor`: ``sequence_bias`` may hold multi-token sequences) included;
2. ``Sampler.sample(logits, slots, num_logprobs=...)``: logit bias, penalties, min-tokens, then on
   sampling rows temperature, pydecode's warpers, top-k -> top-p -> min-p and the draw; greedy rows the argmax;
3. vLLM's output: the sampled ids, and with logprobs the raw logprob and rank of the sampled token and the top-``n``
   (vLLM's ``LogprobsTensors`` layout).

Randomness: row ``i`` draws from the counter-based stream of ``(seed of its request, its output position)``, so a
seeded request's tokens depend on its seed, prompt and parameters only, not on the rest of the batch.

Cases pydecode does not cover — speculative decoding (bonus tokens), logprobs modes other than ``raw_logprobs``,
``logprob_token_ids``, thinking budgets, custom argmax-invariant processors (they run after vLLM's temperature) and
runs without the batch state (vLLM's warm-up) — go to vLLM's own sampler, unchanged.
"""
from __future__ import annotations

import torch
from vllm.v1.outputs import LogprobsTensors, SamplerOutput
from vllm.v1.sample.logits_processor import LogitBiasLogitsProcessor, MinPLogitsProcessor, MinTokensLogitsProcessor
from vllm.v1.sample.ops.bad_words import apply_bad_words
from vllm.v1.sample.sampler import Sampler as VllmSampler

from ...ops.logprobs import token_logprobs_unchecked
from .batch_slots import PydecodeSamplerState
from .logits_processors import PydecodeWarpersProcessor

# processors whose work pydecode.Sampler does itself, from the converted SamplingParams
_COVERED = (LogitBiasLogitsProcessor, MinTokensLogitsProcessor, MinPLogitsProcessor, PydecodeWarpersProcessor,
            PydecodeSamplerState)


class PydecodeVllmSampler(torch.nn.Module):
    """vLLM's ``Sampler`` interface (``forward(logits, sampling_metadata, ...) -> SamplerOutput``) over
    :class:`pydecode.Sampler`."""

    def __init__(self, logprobs_mode="raw_logprobs", use_fp64_gumbel: bool = False):
        super().__init__()
        self.fallback = VllmSampler(logprobs_mode=logprobs_mode, use_fp64_gumbel=use_fp64_gumbel)
        self.logprobs_mode = logprobs_mode

    @staticmethod
    def _state(metadata) -> PydecodeSamplerState | None:
        return next((p for p in metadata.logitsprocs.argmax_invariant if isinstance(p, PydecodeSamplerState)), None)

    def _handled(self, metadata, state, predict_bonus_token: bool, logprobs_mode) -> bool:
        holder = metadata.thinking_budget_state_holder
        return not (state is None or predict_bonus_token or metadata.logprob_token_ids
                    or logprobs_mode != "raw_logprobs" or (holder is not None and holder.has_tracked_requests())
                    or any(not isinstance(p, _COVERED) for p in metadata.logitsprocs.argmax_invariant))

    def forward(self, logits: torch.Tensor, sampling_metadata, predict_bonus_token: bool = False,
                logprobs_mode_override=None) -> SamplerOutput:
        metadata, state = sampling_metadata, self._state(sampling_metadata)
        logprobs_mode = logprobs_mode_override or self.logprobs_mode
        if not self._handled(metadata, state, predict_bonus_token, logprobs_mode):
            return self.fallback(logits, metadata, predict_bonus_token, logprobs_mode_override)
        raw = logits.to(torch.float32)
        processed = self._vllm_steps(raw, metadata)
        num_logprobs = metadata.max_num_logprobs
        sampler_logprobs = num_logprobs if num_logprobs is not None and num_logprobs >= 0 else None
        if processed is not raw:  # the sampler's logprobs would be those of the processed logits
            sampler_logprobs = None
        out = state.sampler.sample(processed, state.slots(raw.shape[0]), num_logprobs=sampler_logprobs)
        tokens = out.token_ids
        logprobs = None
        if num_logprobs == -1:
            logprobs = LogprobsTensors(torch.empty(0), raw.log_softmax(-1), torch.empty(0))
        elif num_logprobs is not None:
            if out.logprobs is None:  # the logprobs of the raw logits at the drawn tokens
                out.logprobs, out.top_logprobs, out.top_ids = token_logprobs_unchecked(
                    raw[:, :state.sampler.vocab_size], tokens, num_logprobs)
            logprobs = self._logprobs(raw, tokens, out, num_logprobs)
        return SamplerOutput(sampled_token_ids=tokens.to(torch.int32).unsqueeze(-1), logprobs_tensors=logprobs)

    @staticmethod
    def _vllm_steps(logits: torch.Tensor, metadata) -> torch.Tensor:
        """vLLM's masks and its custom argmax-changing processors, on a copy; ``logits`` itself when none apply."""
        custom = [p for p in metadata.logitsprocs.non_argmax_invariant if not isinstance(p, _COVERED)]
        if metadata.allowed_token_ids_mask is None and not metadata.bad_words_token_ids and not custom:
            return logits
        logits = logits.clone()
        if metadata.allowed_token_ids_mask is not None:
            logits.masked_fill_(metadata.allowed_token_ids_mask, float("-inf"))
        if metadata.bad_words_token_ids:
            apply_bad_words(logits, metadata.bad_words_token_ids, metadata.output_token_ids)
        for processor in custom:
            logits = processor.apply(logits)
        return logits

    @staticmethod
    def _logprobs(raw: torch.Tensor, tokens: torch.Tensor, out, num_logprobs: int) -> LogprobsTensors:
        """The sampled token's raw logprob and rank, then the ``num_logprobs`` most likely (vLLM's layout)."""
        ranks = (raw >= raw.gather(1, tokens[:, None])).sum(-1)  # vLLM's rank: 1 for the most likely token
        ids, values = tokens[:, None], out.logprobs[:, None]
        if num_logprobs:
            ids, values = torch.cat([ids, out.top_ids], dim=1), torch.cat([values, out.top_logprobs], dim=1)
        return LogprobsTensors(ids.to(torch.int32), values, ranks)
