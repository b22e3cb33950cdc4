"""Per-request arguments of pydecode's processors that serving engines lack, read from a request's free-form extras
(vLLM's ``SamplingParams.extra_args`` = ``vllm_xargs`` over HTTP; SGLang's ``custom_params``).

The names are pydecode's own (= transformers') parameter names. Parsing needs no engine, so validation runs where
the request is admitted and a bad value is a clear error (HTTP 400) instead of a failed step. Keys that are not
pydecode's are ignored: they may belong to another plugin.

``bad_words_ids`` and ``sequence_bias`` are nested lists, which vLLM's ``vllm_xargs`` cannot carry over HTTP (it takes
flat lists only): there they may also be given as JSON text, e.g. ``"bad_words_ids": "[[17, 42], [9]]"``.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _float_in(extras: dict, name: str, default: float, low: float, high: float, low_open: bool, high_open: bool):
    value = extras.get(name, default)
    inside = _is_real(value) and not math.isnan(value) and (low < value if low_open else low <= value) and (
        value < high if high_open else value <= high)
    if not inside:
        bounds = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {bounds}, got {value!r}")
    return float(value)


def _nested(extras: dict, name: str):
    """The nested-list field ``name`` (``[]`` when absent), decoding JSON text."""
    value = extras.get(name, [])
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} given as text must be JSON ({error}), got {value!r}") from None
    return value


def _token_ids(value) -> tuple[int, ...] | None:
    if isinstance(value, (list, tuple)) and value and all(_is_int(t) and t >= 0 for t in value):
        return tuple(int(t) for t in value)
    return None


@dataclass(frozen=True)
class RequestArgs:
    """pydecode's extra processors for one request; every field at its neutral value means "nothing to do"."""

    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    sequence_bias: tuple[tuple[tuple[int, ...], float], ...] = ()
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


def parse_request_args(extras: dict | None) -> RequestArgs:
    """:class:`RequestArgs` from a request's extras; raises ValueError naming the field and its allowed values."""
    if not extras:
        return RequestArgs()
    if not isinstance(extras, dict):
        raise ValueError(f"extra_args must be a dict, got {type(extras).__name__}")
    size = extras.get("no_repeat_ngram_size", 0)
    if not (_is_int(size) and size >= 0):
        raise ValueError(f"no_repeat_ngram_size must be an int >= 0, got {size!r}")
    bad_words = _nested(extras, "bad_words_ids")
    parsed_words = [_token_ids(word) for word in bad_words] if isinstance(bad_words, (list, tuple)) else [None]
    if any(word is None for word in parsed_words):
        raise ValueError("bad_words_ids must be a list of token-id sequences (non-empty lists of ints >= 0), got "
                         f"{bad_words!r}")
    bias = _nested(extras, "sequence_bias")
    pairs = list(bias) if isinstance(bias, (list, tuple)) else [None]
    parsed_bias = []
    for pair in pairs:
        ids = _token_ids(pair[0]) if isinstance(pair, (list, tuple)) and len(pair) == 2 else None
        if ids is None or not (_is_real(pair[1]) and math.isfinite(pair[1])):
            raise ValueError("sequence_bias must be a list of [token ids (a non-empty list of ints >= 0), bias (a "
                             f"finite number)] pairs, got {bias!r}")
        parsed_bias.append((ids, float(pair[1])))
    return RequestArgs(
        no_repeat_ngram_size=int(size),
        bad_words_ids=tuple(parsed_words),
        sequence_bias=tuple(parsed_bias),
        typical_p=_float_in(extras, "typical_p", 1.0, 0.0, 1.0, True, False),
        top_h=_float_in(extras, "top_h", 0.0, 0.0, 1.0, False, False),
        epsilon_cutoff=_float_in(extras, "epsilon_cutoff", 0.0, 0.0, 1.0, False, True),
        eta_cutoff=_float_in(extras, "eta_cutoff", 0.0, 0.0, 1.0, False, True),
        dynatemp_range=_float_in(extras, "dynatemp_range", 0.0, 0.0, math.inf, False, True),
        dynatemp_exponent=_float_in(extras, "dynatemp_exponent", 1.0, 0.0, math.inf, False, True),
    )
