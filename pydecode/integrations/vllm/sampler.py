"""A drop-in for vLLM's v1 ``Sampler`` that samples with pydecode's ops (the kernels ``pydecode.generate`` uses).

Steps, in order (vLLM's own order, its output format):

1. raw logprobs (``log_softmax`` of the model's logits) when the batch asks for logprobs
2. vLLM's allowed-token mask, bad words and the processors that can change the argmax (min-tokens, logit bias,
   custom ones such as :class:`~.logits_processors.PydecodeBansProcessor`)
3. pydecode penalties: repetition (prompt + output), frequency and presence (output)
4. sampling rows: temperature, then the argmax-invariant processors but vLLM's min-p (pydecode applies min-p)
5. pydecode's fused draw: top-k -> top-p -> min-p -> Gumbel-max; greedy rows (temperature < 1e-5) take the argmax
6. the sampled token's logprob, its rank and the top-``n`` alternatives (vLLM's ``LogprobsTensors``)

Randomness: each row draws one 63-bit key per step from its request's ``torch.Generator`` (seeded requests) or from
the global generator (the others) and pydecode's counter-based stream does the rest, so a seeded request's tokens
depend on its seed, prompt and parameters only, not on the rest of the batch.

Cases pydecode does not cover — speculative decoding (bonus tokens), logprobs modes other than ``raw_logprobs``,
``logprob_token_ids``, thinking budgets — are handed to vLLM's own sampler, unchanged.
"""
from __future__ import annotations

import torch
from vllm.v1.outputs import LogprobsTensors, SamplerOutput
from vllm.v1.sample.logits_processor import MinPLogitsProcessor
from vllm.v1.sample.ops.bad_words import apply_bad_words
from vllm.v1.sample.sampler import Sampler as VllmSampler

from ...ops.logprobs import token_logprobs_unchecked
from ...ops.penalties import penalties_unchecked
from ...ops.sampling import sample_unchecked
from ..processors import GREEDY_BELOW

_KEY_HIGH = 1 << 62


class PydecodeVllmSampler(torch.nn.Module):
    """vLLM's ``Sampler`` interface (``forward(logits, sampling_metadata, ...) -> SamplerOutput``) over pydecode."""

    def __init__(self, logprobs_mode="raw_logprobs", use_fp64_gumbel: bool = False):
        super().__init__()
        self.fallback = VllmSampler(logprobs_mode=logprobs_mode, use_fp64_gumbel=use_fp64_gumbel)
        self.logprobs_mode = logprobs_mode

    def _handled(self, metadata, predict_bonus_token: bool, logprobs_mode) -> bool:
        holder = metadata.thinking_budget_state_holder
        return not (predict_bonus_token or metadata.logprob_token_ids or logprobs_mode != "raw_logprobs"
                    or (holder is not None and holder.has_tracked_requests()))

    def forward(self, logits: torch.Tensor, sampling_metadata, predict_bonus_token: bool = False,
                logprobs_mode_override=None) -> SamplerOutput:
        metadata = sampling_metadata
        logprobs_mode = logprobs_mode_override or self.logprobs_mode
        if not self._handled(metadata, predict_bonus_token, logprobs_mode):
            return self.fallback(logits, metadata, predict_bonus_token, logprobs_mode_override)
        num_logprobs = metadata.max_num_logprobs
        logits = logits.to(torch.float32)
        raw = logits.clone() if num_logprobs is not None else None
        logits = self._process(logits, metadata)
        tokens = self._draw(logits, metadata)
        logprobs = None
        if num_logprobs == -1:
            logprobs = LogprobsTensors(torch.empty(0), raw.log_softmax(-1), torch.empty(0))
        elif num_logprobs is not None:
            logprobs = self._logprobs(raw, tokens, num_logprobs)
        return SamplerOutput(sampled_token_ids=tokens.to(torch.int32).unsqueeze(-1), logprobs_tensors=logprobs)

    def _process(self, logits: torch.Tensor, metadata) -> torch.Tensor:
        """Steps 2-4: vLLM's masks and processors around pydecode's penalties, then temperature."""
        if metadata.allowed_token_ids_mask is not None:
            logits.masked_fill_(metadata.allowed_token_ids_mask, float("-inf"))
        if metadata.bad_words_token_ids:
            apply_bad_words(logits, metadata.bad_words_token_ids, metadata.output_token_ids)
        for processor in metadata.logitsprocs.non_argmax_invariant:
            logits = processor.apply(logits)
        if not metadata.no_penalties:
            counts, prompt_mask = self._token_counts(metadata, logits.shape[1], logits.device)
            penalties_unchecked(logits, counts, prompt_mask, metadata.repetition_penalties,
                                metadata.frequency_penalties, metadata.presence_penalties)
        if metadata.all_greedy:
            return logits
        temperature = metadata.temperature
        logits = logits / torch.where(temperature < GREEDY_BELOW, 1.0, temperature)[:, None]
        for processor in metadata.logitsprocs.argmax_invariant:
            if not isinstance(processor, MinPLogitsProcessor):
                logits = processor.apply(logits)
        return logits

    @staticmethod
    def _token_counts(metadata, vocab: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V) int32 counts of each row's output tokens and (B, V) bool mask of its prompt tokens."""
        batch = len(metadata.output_token_ids)
        width = max((len(ids) for ids in metadata.output_token_ids), default=0)
        output = torch.full((batch, width), vocab, dtype=torch.int64)
        for row, ids in enumerate(metadata.output_token_ids):
            output[row, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
        output = output.masked_fill_(output < 0, vocab).to(device)  # -1: a placeholder of async scheduling
        counts = torch.zeros(batch, vocab + 1, dtype=torch.int32, device=device)
        counts.scatter_add_(1, output, torch.ones_like(output, dtype=torch.int32))
        prompt = metadata.prompt_token_ids.to(device=device, dtype=torch.int64)  # padded with vocab
        prompt_mask = torch.zeros(batch, vocab + 1, dtype=torch.bool, device=device).scatter_(1, prompt, True)
        return counts[:, :vocab].contiguous(), prompt_mask[:, :vocab].contiguous()

    @staticmethod
    def _keys(metadata, batch: int) -> torch.Tensor:
        """(B,) int64 stream keys: one draw per row from its request's generator, else from the global one."""
        keys = torch.randint(_KEY_HIGH, (batch,), dtype=torch.int64)
        for row, generator in metadata.generators.items():
            keys[row] = torch.randint(_KEY_HIGH, (1,), generator=generator, dtype=torch.int64, device=generator.device)
        return keys

    def _draw(self, logits: torch.Tensor, metadata) -> torch.Tensor:
        """Step 5: greedy rows the argmax, sampling rows pydecode's fused top-k / top-p / min-p draw."""
        if metadata.all_greedy:
            return logits.argmax(dim=-1)
        batch = logits.shape[0]
        greedy = metadata.temperature < GREEDY_BELOW
        temperature = torch.where(greedy, 0.0, 1.0)  # the sampling rows are divided already
        top_k = metadata.top_k if metadata.top_k is not None else 0
        top_p = metadata.top_p if metadata.top_p is not None else 1.0
        min_p = self._min_p(metadata, batch, logits.device)
        keys = self._keys(metadata, batch).to(logits.device)
        return sample_unchecked(logits, temperature, top_k, top_p, min_p, keys, 0)

    @staticmethod
    def _min_p(metadata, batch: int, device):
        for processor in metadata.logitsprocs.argmax_invariant:
            if isinstance(processor, MinPLogitsProcessor) and processor.min_p_count:
                return processor.min_p[:batch, 0].to(device)
        return 0.0

    @staticmethod
    def _logprobs(raw: torch.Tensor, tokens: torch.Tensor, num_logprobs: int) -> LogprobsTensors:
        """The sampled token's raw logprob and rank, then the ``num_logprobs`` most likely (vLLM's layout)."""
        _, top_values, top_ids = token_logprobs_unchecked(raw, tokens, num_logprobs)
        log_probs = raw.log_softmax(-1)
        at_token = log_probs.gather(1, tokens[:, None])
        ranks = (log_probs >= at_token).sum(-1)  # vLLM's rank: 1 for the most likely token
        ids = torch.cat([tokens[:, None], top_ids], dim=1).to(torch.int32)
        return LogprobsTensors(ids, torch.cat([at_token, top_values], dim=1), ranks)
