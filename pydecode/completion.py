"""Text results of :class:`pydecode.LLM`: one :class:`Completion` per returned sequence, built from a generate() output.

Also the hosted-API parameter names (``max_tokens``, ``stop``, ``n``, ``logprobs`` as an integer, ``logit_bias``)
and their translation into ``pydecode.generate`` keywords.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

# hosted-API name -> pydecode.generate keyword; pydecode.SamplingParams defines what each means
HOSTED_NAMES = {"max_tokens": "max_new_tokens", "stop": "stop_strings", "n": "num_return_sequences",
                "logprobs": "top_logprobs", "logit_bias": "sequence_bias"}


def to_generate_kwargs(kwargs: dict) -> dict:
    """``kwargs`` in either naming convention -> ``pydecode.generate`` keywords. The hosted-API names (and the
    pydecode names they alias) go through :class:`pydecode.SamplingParams`, which validates them and raises
    ``ValueError`` for one setting given under both names; ``logprobs=N`` turns on ``output_logprobs`` too. Every
    other keyword passes through unchanged, so settings left out keep the model's generation config."""
    hosted = {k: v for k, v in kwargs.items() if v is not None and k in HOSTED_NAMES}
    if not hosted:
        return dict(kwargs)
    from .sampler import SamplingParams

    targets = {HOSTED_NAMES[k] for k in hosted}
    params = SamplingParams(**hosted, **{k: v for k, v in kwargs.items() if k in targets})
    converted = params.to_generate_kwargs()
    out = {k: v for k, v in kwargs.items() if k not in targets and k not in HOSTED_NAMES}
    out.update({name: converted[name] for name in targets if name in converted})
    if "logprobs" in hosted:
        out["output_logprobs"] = True
    return out


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, id, log-probability under the model, and the ``top`` most likely alternatives
    as ``(text, id, logprob)``, most likely first."""

    token: str
    token_id: int
    logprob: float
    top: tuple[tuple[str, int, float], ...] = ()


@dataclass
class Completion:
    """One returned sequence. ``text`` excludes the prompt, special tokens and the matched stop string (and anything
    after it); ``token_ids`` are the generated ids up to the one that finished the row (an eos id included);
    ``finish_reason`` is ``"stop"`` (eos or a stop string) or ``"length"`` (token limit, time limit or a stopping
    criterion); ``stop`` the stop string matched; ``logprobs`` one entry per token of ``token_ids`` when asked for;
    ``seconds`` the wall time of the generate() call that produced it (shared by the batch). Prompt ``prompt_index``'s
    ``n`` sequences have ``index`` 0 .. n-1."""

    text: str
    token_ids: list[int]
    finish_reason: str
    stop: str | None = None
    logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int = 0
    seconds: float = 0.0
    prompt_index: int = 0
    index: int = 0
    usage: dict = field(init=False)

    def __post_init__(self):
        self.usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": len(self.token_ids),
                      "total_tokens": self.prompt_tokens + len(self.token_ids)}

    def to_choice(self) -> dict:
        """This completion as a hosted-API ``choices`` entry: ``logprobs`` holds ``tokens``, ``token_logprobs`` and,
        per token, ``top_logprobs`` as a list of ``{"token", "token_id", "logprob"}`` (a list, not a dict keyed by
        text: two ids can decode to the same text)."""
        choice = {"index": self.index, "text": self.text, "finish_reason": self.finish_reason, "stop": self.stop,
                  "token_ids": self.token_ids, "logprobs": None}
        if self.logprobs is not None:
            choice["logprobs"] = {
                "tokens": [entry.token for entry in self.logprobs],
                "token_logprobs": [entry.logprob for entry in self.logprobs],
                "top_logprobs": [[{"token": text, "token_id": token_id, "logprob": logprob}
                                  for text, token_id, logprob in entry.top] for entry in self.logprobs],
            }
        return choice


def first_stop(text: str, stops) -> tuple[int, str | None]:
    """``(position, stop string)`` of the earliest stop string in ``text``; ``(len(text), None)`` without one."""
    found = (len(text), None)
    for stop in stops or ():
        at = text.find(stop)
        if at != -1 and at < found[0]:
            found = (at, stop)
    return found


def completions(tokenizer, output, prompt_lengths: list[int], padded_length: int, n: int, eos_ids, stops,
                seconds: float) -> list[Completion]:
    """The :class:`Completion` of each row of ``output`` (a generate() dict output over left-padded prompts of
    ``padded_length`` tokens; rows ``i*n .. i*n+n-1`` belong to prompt ``i``)."""
    new = output.sequences[:, padded_length:].tolist()
    wanted = getattr(output, "logprobs", None) is not None
    logprobs = output.logprobs.tolist() if wanted else None
    top = output.top_logprobs.tolist() if wanted and output.top_logprobs is not None else None
    top_ids = output.top_logprob_ids.tolist() if top is not None else None
    result = []
    for row, ids in enumerate(new):
        end, reason = _row_end(tokenizer, ids, eos_ids, stops)
        text = tokenizer.decode(ids[:end], skip_special_tokens=True)
        cut, stop = first_stop(text, stops)
        entries = None
        if wanted:
            entries = [TokenLogprob(tokenizer.decode([token]), token, logprobs[row][t],
                                    tuple((tokenizer.decode([alt]), alt, lp)
                                          for alt, lp in zip(top_ids[row][t], top[row][t])) if top else ())
                       for t, token in enumerate(ids[:end])]
        result.append(Completion(text[:cut], ids[:end], "stop" if stop or reason else "length", stop, entries,
                                 prompt_lengths[row // n], seconds, row // n, row % n))
    return result


def _row_end(tokenizer, ids: list[int], eos_ids, stops) -> tuple[int, bool]:
    """``(length, stopped)``: how many of ``ids`` the row generated before it finished (padding after it dropped),
    and whether an eos id or a stop string finished it."""
    end = next((t + 1 for t, token in enumerate(ids) if token in eos_ids), None)
    limit = end if end is not None else len(ids)
    if stops:  # the shortest prefix whose text holds a stop string (monotone in the length: bisect)
        low, high = 1, limit
        if first_stop(tokenizer.decode(ids[:high], skip_special_tokens=True), stops)[1] is not None:
            while low < high:
                mid = (low + high) // 2
                if first_stop(tokenizer.decode(ids[:mid], skip_special_tokens=True), stops)[1] is not None:
                    high = mid
                else:
                    low = mid + 1
            return low, True
    return limit, end is not None


def left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of token lists left-padded with ``pad_id`` to the longest."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)
