"""Adapters from the backend contracts (:mod:`.registry`) to the compiled ops ``torch.ops.pydecode.*``.

The same functions serve the ``cpp`` and ``cuda`` backends: torch dispatches on the tensors' device. Each per-row
parameter goes to the op as a pair ``(tensor or None, scalar)``. The fake implementations below let
``torch.compile`` trace the ops without running them.
"""
from __future__ import annotations

import torch

import pydecode._C  # noqa: F401  (registers torch.ops.pydecode.*)

_ops = torch.ops.pydecode


def _pair(value, cast):
    """``(tensor, 0)`` for a (B,) tensor, ``(None, scalar)`` for a Python number."""
    return (value, cast(0)) if isinstance(value, torch.Tensor) else (None, cast(value))


def top_k_top_p_sample(logits, temperature, top_k, top_p, min_p, seeds, step) -> torch.Tensor:
    """Fused temperature -> top-k -> top-p -> min-p -> Gumbel-max draw; (B,) int64 token ids."""
    return _ops.top_k_top_p_sample(logits, *_pair(temperature, float), *_pair(top_k, int), *_pair(top_p, float),
                                   *_pair(min_p, float), seeds, int(step))


def top_k_top_p_sample_logprobs(logits, temperature, top_k, top_p, min_p, seeds, step):
    """The same draw and the token's ``(logprob, processed_logprob)``: (B,) int64, (B,) float32, (B,) float32."""
    return _ops.top_k_top_p_sample_logprobs(logits, *_pair(temperature, float), *_pair(top_k, int),
                                            *_pair(top_p, float), *_pair(min_p, float), seeds, int(step))


def apply_penalties_(logits, token_counts, prompt_mask, repetition=1.0, frequency=0.0, presence=0.0):
    """Repetition / frequency / presence penalties in place on float32 ``logits``; returns ``logits``."""
    _ops.apply_penalties_(logits, token_counts, prompt_mask, *_pair(repetition, float), *_pair(frequency, float),
                          *_pair(presence, float))
    return logits


def record_tokens_(token_counts, tokens):
    """``token_counts[b, tokens[b]] += 1`` in place; returns ``token_counts``."""
    _ops.record_tokens_(token_counts, tokens)
    return token_counts


def token_logprobs(logits, tokens, top_n=0):
    """``(logprob (B,), top_values (B, n), top_ids (B, n))`` with ``n = min(top_n, V)``."""
    return _ops.token_logprobs(logits, tokens, int(top_n))


@torch.library.register_fake("pydecode::top_k_top_p_sample")
def _sample_fake(logits, temperature, temperature_val, top_k, top_k_val, top_p, top_p_val, min_p, min_p_val, seeds,
                 step):
    return logits.new_empty(logits.shape[0], dtype=torch.int64)


@torch.library.register_fake("pydecode::top_k_top_p_sample_logprobs")
def _sample_logprobs_fake(logits, *params):
    batch = logits.shape[0]
    return (logits.new_empty(batch, dtype=torch.int64), logits.new_empty(batch, dtype=torch.float32),
            logits.new_empty(batch, dtype=torch.float32))


@torch.library.register_fake("pydecode::apply_penalties_")
def _penalties_fake(logits, token_counts, prompt_mask, repetition, repetition_val, frequency, frequency_val,
                    presence, presence_val):
    return None


@torch.library.register_fake("pydecode::record_tokens_")
def _record_fake(token_counts, tokens):
    return None


@torch.library.register_fake("pydecode::token_logprobs")
def _logprobs_fake(logits, tokens, top_n):
    batch, vocab = logits.shape
    n = min(top_n, vocab)
    return (logits.new_empty(batch, dtype=torch.float32), logits.new_empty(batch, n, dtype=torch.float32),
            logits.new_empty(batch, n, dtype=torch.int64))
