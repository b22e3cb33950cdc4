"""``pydecode.SamplingParams``: one request's decoding parameters, frozen and validated on construction.

Canonical fields carry :func:`pydecode.generate`'s (= transformers') keyword names; the constructor also takes the
hosted-API (OpenAI-style) names as aliases:

=====================  ==========================================================
alias                  canonical field
=====================  ==========================================================
``max_tokens``         ``max_new_tokens``
``stop`` (str / list)  ``stop_strings``
``logprobs`` (int)     ``top_logprobs`` (and ``output_logprobs=True``)
``n``                  ``num_return_sequences``
``logit_bias``         ``sequence_bias`` ({token_id: bias} -> one-token sequences)
=====================  ==========================================================

Defaults are the neutral value of each step (no filter, no penalty). ``do_sample=None`` follows the hosted-API
convention: sample when ``temperature > 0``, greedy at ``temperature == 0``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..ops.validation import PARAMETER_RANGES

_INT64 = (-(1 << 63), (1 << 63) - 1)

# float fields: their entries of the one range table
_FLOAT_RANGES = {name: r for name, r in PARAMETER_RANGES.items() if not r.integer and name != "penalty_alpha"}
# integer fields: lowest allowed value (None allowed where the default is None)
_INT_LOWS = {"max_new_tokens": 1, "min_new_tokens": 0, "top_k": PARAMETER_RANGES["top_k"].low,
             "no_repeat_ngram_size": 0, "num_return_sequences": 1, "top_logprobs": 0}

_ALIASES = {"max_tokens": "max_new_tokens", "stop": "stop_strings", "logprobs": "top_logprobs",
            "n": "num_return_sequences", "logit_bias": "sequence_bias"}

# fields copied as they are between SamplingParams and a GenerationConfig
_CONFIG_FIELDS = ("max_new_tokens", "min_new_tokens", "temperature", "top_k", "top_p", "min_p", "typical_p",
                  "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "frequency_penalty", "presence_penalty",
                  "no_repeat_ngram_size", "num_return_sequences", "seed", "output_logprobs", "top_logprobs",
                  "dynatemp_range", "dynatemp_exponent")
_WARPERS = ("temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
            "dynatemp_range", "dynatemp_exponent")


@dataclass(frozen=True, init=False)
class SamplingParams:
    """One request's parameters. Bad values raise ``ValueError`` (``TypeError`` for a wrong type) naming the field.

    Token-id collections are stored as tuples (the object is hashable): ``bad_words_ids`` a tuple of tuples,
    ``sequence_bias`` a tuple of ``((token ids...), bias)`` pairs, ``eos_token_id`` a tuple.
    ``dynatemp_range`` > 0 turns on entropy-scaled temperature (llama.cpp's ``temp_ext``): each step's temperature
    is ``t_min + (t + r - t_min) * (H / H_max) ** dynatemp_exponent`` with ``t_min = max(0, t - r)``, ``H`` the
    entropy of the step's distribution and ``H_max`` its maximum (see :mod:`pydecode.ops.sample.dynatemp`).
    """

    max_new_tokens: int | None = None
    min_new_tokens: int = 0
    do_sample: bool | None = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    typical_p: float = 1.0
    top_h: float = 0.0
    epsilon_cutoff: float = 0.0
    eta_cutoff: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: tuple | None = None
    suppress_tokens: tuple | None = None
    sequence_bias: tuple | None = None
    eos_token_id: tuple | None = None
    stop_strings: tuple | None = None
    num_return_sequences: int = 1
    seed: int | None = None
    output_logprobs: bool = False
    top_logprobs: int = 0
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0

    def __init__(self, **kwargs):
        names = {f.name for f in fields(self)}
        values, given_as = {}, {}
        for key, value in kwargs.items():
            name = _ALIASES.get(key, key)
            if name not in names:
                raise TypeError(f"SamplingParams got an unknown parameter {key!r}")
            if name in values:
                raise ValueError(f"SamplingParams got both {given_as[name]!r} and {key!r}, two names of {name!r}; "
                                 "pass one of them")
            values[name], given_as[name] = _from_alias(key, value), key
            if key == "logprobs":
                values.setdefault("output_logprobs", True)
        for f in fields(self):
            object.__setattr__(self, f.name, _checked(f.name, values.get(f.name, f.default)))

    @property
    def sampling(self) -> bool:
        """Whether tokens are drawn (else argmax): ``do_sample``, or ``temperature > 0`` when it is None."""
        return self.do_sample if self.do_sample is not None else self.temperature > 0

    def to_generate_kwargs(self) -> dict:
        """Keywords for :func:`pydecode.generate` that run exactly these parameters (warpers only when sampling).

        ``stop_strings`` needs ``tokenizer=`` passed to generate too; logprobs need ``return_dict_in_generate``
        (set here when asked for)."""
        out = {name: getattr(self, name) for name in _CONFIG_FIELDS if name not in _WARPERS or self.sampling}
        out["do_sample"] = self.sampling
        for name in ("max_new_tokens", "seed"):
            if out[name] is None:
                del out[name]
        if not self.dynatemp_range:
            out.pop("dynatemp_range", None)
            out.pop("dynatemp_exponent", None)
        if self.sampling and self.top_h:
            out["top_h"] = self.top_h
        if self.bad_words_ids:
            out["bad_words_ids"] = [list(w) for w in self.bad_words_ids]
        if self.suppress_tokens:
            out["suppress_tokens"] = list(self.suppress_tokens)
        if self.sequence_bias:
            out["sequence_bias"] = [[list(ids), bias] for ids, bias in self.sequence_bias]
        if self.eos_token_id is not None:
            eos = list(self.eos_token_id)
            out["eos_token_id"] = eos[0] if len(eos) == 1 else eos
        if self.stop_strings:
            out["stop_strings"] = list(self.stop_strings)
        if self.output_logprobs or self.top_logprobs:
            out["return_dict_in_generate"] = True
        return out

    def to_generation_config(self):
        """A :class:`pydecode.GenerationConfig` holding these parameters."""
        from ..generation.config import GenerationConfig

        kwargs = self.to_generate_kwargs()
        kwargs.pop("return_dict_in_generate", None)
        return GenerationConfig(**kwargs)

    @classmethod
    def from_generation_config(cls, config) -> "SamplingParams":
        """The parameters of a transformers / pydecode ``GenerationConfig`` (fields it lacks keep their defaults;
        unset filters such as ``top_k=None`` or ``top_h=None`` are off)."""
        values = {}
        for name in (*_CONFIG_FIELDS, "do_sample", "top_h", "bad_words_ids", "suppress_tokens", "sequence_bias",
                     "eos_token_id", "stop_strings"):
            value = getattr(config, name, None)
            if value is not None:
                values[name] = value
        values["do_sample"] = bool(getattr(config, "do_sample", False))  # unset means greedy in transformers
        if not values["do_sample"]:
            for name in _WARPERS + ("top_h",):  # a greedy config's warper values are unused
                values.pop(name, None)
        return cls(**values)


def _from_alias(key: str, value):
    if key == "stop" and isinstance(value, str):
        return (value,)
    if key == "logit_bias":
        if not isinstance(value, dict):
            raise TypeError(f"logit_bias must be a dict {{token_id: bias}}, got {type(value).__name__}")
        return tuple(((token,), bias) for token, bias in value.items())
    return value


def _checked(name: str, value):
    """``value`` validated and normalised for the field ``name``."""
    if value is None and name in ("max_new_tokens", "do_sample", "seed", "bad_words_ids", "suppress_tokens",
                                  "sequence_bias", "eos_token_id", "stop_strings"):
        return None
    if name in _FLOAT_RANGES:
        r = _FLOAT_RANGES[name]
        return _checked_float(name, value, r.low, r.high, r.low_open, r.high_open)
    if name in _INT_LOWS:
        return _checked_int(name, value, _INT_LOWS[name])
    if name in ("do_sample", "output_logprobs"):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        return value
    if name == "seed":
        return _checked_int(name, value, _INT64[0], _INT64[1])
    if name in ("suppress_tokens", "eos_token_id"):
        return _token_ids(name, [value] if isinstance(value, int) else value)
    if name == "bad_words_ids":
        words = tuple(_token_ids(name, w) for w in _sequence(name, value))
        if not words or any(len(w) == 0 for w in words):
            raise ValueError("bad_words_ids must be a non-empty list of non-empty lists of token ids >= 0")
        return words
    if name == "sequence_bias":
        return _sequence_bias(value)
    if name == "stop_strings":
        strings = tuple(_sequence(name, value))
        if not strings or any(not isinstance(s, str) or not s for s in strings):
            raise ValueError(f"stop_strings must be a non-empty list of non-empty strings, got {value!r}")
        return strings
    raise AssertionError(name)


def _checked_float(name, value, low, high, low_open, high_open):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    v = float(value)
    if math.isnan(v) or v < low or v > high or (low_open and v == low) or (high_open and v == high):
        brackets = ("(" if low_open else "[", ")" if high_open else "]")
        raise ValueError(f"{name} must lie in {brackets[0]}{low}, {high}{brackets[1]}, got {value}")
    return v


def _checked_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer >= {low}{'' if high is None else f' and <= {high}'}, "
                         f"got {value}")
    return value


def _sequence(name, value):
    if isinstance(value, (str, bytes)) and name != "stop_strings" or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    return [value] if isinstance(value, str) else list(value)


def _token_ids(name, value) -> tuple:
    ids = tuple(_sequence(name, value))
    if any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids):
        raise ValueError(f"{name} must hold token ids (integers >= 0), got {list(ids)}")
    return ids


def _sequence_bias(value) -> tuple:
    """``((ids...), bias)`` pairs from a list ``[[ids, bias], ...]``, a dict ``{(ids...): bias}`` or pairs."""
    items = list(value.items()) if isinstance(value, dict) else _sequence("sequence_bias", value)
    pairs = []
    for item in items:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise ValueError(f"sequence_bias must hold (token ids, bias) pairs, got {item!r}")
        ids, bias = item
        ids = _token_ids("sequence_bias", [ids] if isinstance(ids, int) else ids)
        if not ids:
            raise ValueError("sequence_bias token id sequences must be non-empty")
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or math.isnan(bias):
            raise ValueError(f"sequence_bias biases must be numbers, got {bias!r}")
        pairs.append((ids, float(bias)))
    if not pairs:
        raise ValueError("sequence_bias must not be empty (use None for no bias)")
    return tuple(pairs)
