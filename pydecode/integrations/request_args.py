"""Per-request arguments of pydecode's processors that serving engines lack, read from a request's free-form extras
(vLLM's ``SamplingParams.extra_args`` = ``vllm_xargs`` over HTTP).

The names and the checks are :class:`pydecode.SamplingParams`' own, so validation runs where the request is admitted
and a bad value is a clear error (HTTP 400) instead of a failed step. Keys that are not pydecode's are ignored: they
may belong to another plugin.

``bad_words_ids`` and ``sequence_bias`` are nested lists, which vLLM's ``vllm_xargs`` cannot carry over HTTP (it takes
flat lists only): there they may also be given as JSON text, e.g. ``"bad_words_ids": "[[17, 42], [9]]"``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..sampler import SamplingParams

FIELDS = ("no_repeat_ngram_size", "bad_words_ids", "sequence_bias", "typical_p", "top_h", "epsilon_cutoff",
          "eta_cutoff", "dynatemp_range", "dynatemp_exponent")
_NESTED = ("bad_words_ids", "sequence_bias")


@dataclass(frozen=True)
class RequestArgs:
    """pydecode's extra processors for one request; every field at its neutral value means "nothing to do"."""

    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] | None = None
    sequence_bias: tuple[tuple[tuple[int, ...], float], ...] | None = None
    typical_p: float = 1.0
    top_h: float = 0.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0

    @property
    def has_bans(self) -> bool:
        """Any of the processors that run before the penalties (they can change the greedy token)."""
        return bool(self.no_repeat_ngram_size or self.bad_words_ids or self.sequence_bias)

    @property
    def has_warpers(self) -> bool:
        """Any of the warpers that run after the temperature (sampling requests only)."""
        return (self.typical_p < 1.0 or self.top_h > 0.0 or self.epsilon_cutoff > 0.0 or self.eta_cutoff > 0.0
                or self.dynatemp_range > 0.0)


def _decoded(name: str, value):
    """A nested-list field given as JSON text, decoded; anything else as it is."""
    if name not in _NESTED or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"{name} given as text must be JSON ({error}), got {value!r}") from None


def parse_request_args(extras: dict | None) -> RequestArgs:
    """:class:`RequestArgs` from a request's extras; raises ValueError naming the field and its allowed values."""
    if not extras:
        return RequestArgs()
    if not isinstance(extras, dict):
        raise ValueError(f"extra_args must be a dict, got {type(extras).__name__}")
    given = {name: _decoded(name, extras[name]) for name in FIELDS if name in extras}
    try:
        params = SamplingParams(**given)
    except (TypeError, ValueError) as error:  # engines answer a ValueError with HTTP 400
        raise ValueError(str(error)) from None
    if any(not math.isfinite(bias) for _, bias in params.sequence_bias or ()):
        raise ValueError(f"sequence_bias must hold finite biases, got {extras['sequence_bias']!r}")
    return RequestArgs(**{name: getattr(params, name) for name in FIELDS})
