"""The object generate() returns with ``return_dict_in_generate=True``: transformers' fields plus logprobs."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.generation.utils import (
    GenerateBeamDecoderOnlyOutput,
    GenerateBeamEncoderDecoderOutput,
    GenerateDecoderOnlyOutput,
    GenerateEncoderDecoderOutput,
)


def requested_logprobs(config) -> tuple[int, bool]:
    """``(top_n, logprobs)``: how many alternatives per token ``config`` asks for, and whether logprobs are recorded
    at all (``output_logprobs=True`` or ``top_logprobs > 0``, with ``return_dict_in_generate``)."""
    top_n = int(getattr(config, "top_logprobs", 0) or 0)
    wanted = bool(getattr(config, "output_logprobs", False)) or top_n > 0
    return top_n, bool(config.return_dict_in_generate) and wanted


@dataclass
class GenerateOutput(GenerateDecoderOnlyOutput):
    """transformers' ``GenerateDecoderOnlyOutput`` (``sequences``, ``scores``, ``logits``, ``attentions``,
    ``hidden_states``, ``past_key_values``) plus, when asked for with ``output_logprobs=True`` or ``top_logprobs=N``:

    - ``logprobs`` (B, T): each generated token's log-probability under the raw model distribution
    - ``processed_logprobs`` (B, T): the same under the processed distribution it was drawn from
    - ``top_logprobs`` / ``top_logprob_ids`` (B, T, N): the N most likely tokens of the raw distribution;
      positions after a row finished hold zeros in these four
    - ``host_syncs``: how many times the decode loop read a device value back to the host (stopping checks)
    - speculative strategies (assisted, prompt lookup) only: ``acceptance_rate``, the fraction of proposed draft
      tokens the main model accepted, and ``mean_accepted_tokens``, the mean number of draft tokens a row accepted
      per verification step (each step also emits one token of the main model's own)
    """

    logprobs: torch.Tensor | None = None
    processed_logprobs: torch.Tensor | None = None
    top_logprobs: torch.Tensor | None = None
    top_logprob_ids: torch.Tensor | None = None
    host_syncs: int | None = None
    acceptance_rate: float | None = None
    mean_accepted_tokens: float | None = None


@dataclass
class GenerateBeamOutput(GenerateBeamDecoderOnlyOutput):
    """transformers' ``GenerateBeamDecoderOnlyOutput`` (``sequences``, ``sequences_scores``, ``scores``, ``logits``,
    ``beam_indices``, ``attentions``, ``hidden_states``, ``past_key_values``) plus ``host_syncs``: how many times the
    beam loop read a device value back to the host (one stopping check per step), and the logprob fields of
    :class:`GenerateOutput` (each returned hypothesis' tokens under the distributions of the beams that chose
    them)."""

    logprobs: torch.Tensor | None = None
    processed_logprobs: torch.Tensor | None = None
    top_logprobs: torch.Tensor | None = None
    top_logprob_ids: torch.Tensor | None = None
    host_syncs: int | None = None


@dataclass
class Seq2SeqGenerateOutput(GenerateEncoderDecoderOutput):
    """Encoder-decoder models: transformers' ``GenerateEncoderDecoderOutput`` (``sequences`` of decoder ids,
    ``scores``, ``logits``, ``encoder_attentions``, ``encoder_hidden_states`` (un-expanded batch),
    ``decoder_attentions``, ``cross_attentions``, ``decoder_hidden_states``, ``past_key_values``) plus the extra
    fields of :class:`GenerateOutput`."""

    logprobs: torch.Tensor | None = None
    processed_logprobs: torch.Tensor | None = None
    top_logprobs: torch.Tensor | None = None
    top_logprob_ids: torch.Tensor | None = None
    host_syncs: int | None = None
    acceptance_rate: float | None = None
    mean_accepted_tokens: float | None = None


@dataclass
class Seq2SeqBeamOutput(GenerateBeamEncoderDecoderOutput):
    """Encoder-decoder models, beam family: transformers' ``GenerateBeamEncoderDecoderOutput`` plus the extra
    fields of :class:`GenerateBeamOutput`."""

    logprobs: torch.Tensor | None = None
    processed_logprobs: torch.Tensor | None = None
    top_logprobs: torch.Tensor | None = None
    top_logprob_ids: torch.Tensor | None = None
    host_syncs: int | None = None
