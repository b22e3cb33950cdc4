"""transformers' less common logits processors, with its semantics, shared by the per-step and the block pipelines.

Scores are (B, T, V): position j of row b predicts the token at index ``at[b, j]`` of the row's history (B, H); the
per-step pipeline passes T = 1 and ``at = cur_len``. Each step runs at its place in transformers' order:

- ``sequence_bias`` (first): a sequence's bias is added to its last token where the history ends with the rest
- ``encoder_repetition_penalty`` (next): the tokens of the prompt (of the encoder input on an encoder-decoder)
  favoured for a penalty > 1: positive logits multiplied by it, negative ones divided by it
- ``encoder_no_repeat_ngram_size`` (after ``no_repeat_ngram_size``): no n-gram of the prompt / encoder input is
  completed
- ``exponential_decay_length_penalty = (start, factor)`` (after ``remove_invalid_values``): from ``start`` tokens
  after the prompt on, the eos logits grow by ``|logit| * (factor ** (tokens past start) - 1)``
- ``begin_suppress_tokens`` (after ``suppress_tokens``): banned at the first generated position

Set-up reads the configuration on the host once; the steps themselves do not sync.
"""
from __future__ import annotations

import math
import numbers

import torch

from ...ops.constraints import history_tail, ngram_completions, token_mask


def check_extra_processors(config) -> None:
    """Raise ValueError / TypeError for a malformed setting of the processors this module runs."""
    _sequence_bias_items(config.sequence_bias)
    penalty = config.encoder_repetition_penalty
    if penalty is not None and not (_is_real(penalty) and 0 < penalty < math.inf):
        raise ValueError(f"encoder_repetition_penalty must be a number > 0, got {penalty!r}")
    size = config.encoder_no_repeat_ngram_size
    if size is not None and not (isinstance(size, int) and not isinstance(size, bool) and size >= 0):
        raise ValueError(f"encoder_no_repeat_ngram_size must be an int >= 0, got {size!r}")
    decay = config.exponential_decay_length_penalty
    if decay is not None and not (isinstance(decay, (tuple, list)) and len(decay) == 2 and _is_int(decay[0])
                                  and decay[0] >= 0 and _is_real(decay[1]) and math.isfinite(decay[1])):
        raise ValueError("exponential_decay_length_penalty must be a pair (start: int >= 0, factor: float), got "
                         f"{decay!r}")
    begin = config.begin_suppress_tokens
    if begin is not None and not (isinstance(begin, (list, tuple)) and all(_is_int(t) and t >= 0 for t in begin)):
        raise ValueError(f"begin_suppress_tokens must be a list of token ids >= 0, got {begin!r}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _grown(factor: float, steps: int) -> float:
    """``factor ** steps`` as a Python float, infinite where it overflows (Python raises there)."""
    try:
        return pow(factor, steps)
    except OverflowError:
        return math.inf if factor > 0 or steps % 2 == 0 else -math.inf


def _sequence_bias_items(bias) -> list[tuple[tuple[int, ...], float]]:
    """``sequence_bias`` as ``[(token ids, bias)]``, from transformers' list ``[[ids, bias], ...]`` or its older dict
    ``{ids tuple: bias}``; None gives []."""
    if bias is None:
        return []
    if isinstance(bias, dict):
        items = list(bias.items())
    elif isinstance(bias, (list, tuple)):
        items = [tuple(pair) if isinstance(pair, (list, tuple)) and len(pair) == 2 else (None, None) for pair in bias]
    else:
        items = []
    if not items or any(not (isinstance(ids, (list, tuple)) and ids and all(_is_int(t) and t >= 0 for t in ids)
                             and _is_real(value) and math.isfinite(value)) for ids, value in items):
        raise ValueError("sequence_bias must be a non-empty list of [token ids (a non-empty list of ints >= 0), bias "
                         f"(a finite float)] pairs, got {bias!r}")
    return [(tuple(int(t) for t in ids), float(value)) for ids, value in items]


class ExtraProcessors:
    """The settings of one generate() call; :meth:`prepare` builds their tensors once the vocabulary is known.

    ``encoder_ids`` (B, Le): each row's prompt (decoder-only) or encoder input ids, expanded like the rows;
    ``prompt_len``: the (padded) prompt length of the decoder; ``eos_ids``: (E,) tensor or None.
    """

    def __init__(self, config, encoder_ids: torch.Tensor, prompt_len: int, eos_ids: torch.Tensor | None):
        check_extra_processors(config)
        self.bias_items = _sequence_bias_items(config.sequence_bias)
        penalty = config.encoder_repetition_penalty
        size = config.encoder_no_repeat_ngram_size or 0
        wanted = penalty not in (None, 1.0) or size > 0
        # transformers skips encoder ids with dummy (-100) entries
        usable = wanted and encoder_ids.dim() == 2 and not bool((encoder_ids < 0).any())
        self.encoder_penalty = 1 / penalty if usable and penalty not in (None, 1.0) else None
        self.encoder_ngram = size if usable and size > 0 else 0
        self.encoder_ids = encoder_ids
        self.decay = config.exponential_decay_length_penalty
        if self.decay is not None and eos_ids is None:
            raise ValueError("exponential_decay_length_penalty needs an eos_token_id")
        self.eos_ids = eos_ids
        self.prompt_len = prompt_len
        self.max_length = config.max_length
        begin = config.begin_suppress_tokens
        self.begin_tokens = list(begin) if begin else []
        self.begin_index = prompt_len if prompt_len > 1 or config.forced_bos_token_id is None else prompt_len + 1
        # any of the processors is set (so that the scores change)
        self.active = bool(self.bias_items or self.encoder_penalty is not None or self.encoder_ngram
                           or self.decay is not None or self.begin_tokens)

    def prepare(self, vocab: int, device) -> None:
        """Build the bias, ban and decay tensors; raises ValueError for token ids outside the vocabulary."""
        if not self.active:
            return
        ids = [t for ids, _ in self.bias_items for t in ids] + self.begin_tokens
        if any(t >= vocab for t in ids):
            raise ValueError(f"sequence_bias and begin_suppress_tokens must hold token ids in [0, {vocab}), got "
                             f"{sorted(t for t in set(ids) if t >= vocab)}")
        self.single_bias = torch.zeros(vocab, dtype=torch.float32, device=device)
        singles = [(ids[0], value) for ids, value in self.bias_items if len(ids) == 1]
        if singles:
            self.single_bias[[t for t, _ in singles]] = torch.tensor([v for _, v in singles], device=device)
        by_prefix = {}
        for ids, value in self.bias_items:
            if len(ids) > 1:
                by_prefix.setdefault(len(ids) - 1, []).append((ids, value))
        self.multi_bias = [
            (torch.tensor([ids[:-1] for ids, _ in group], device=device),
             torch.tensor([ids[-1] for ids, _ in group], device=device),
             torch.tensor([value for _, value in group], dtype=torch.float32, device=device))
            for group in by_prefix.values()
        ]
        self.begin_ban = token_mask(self.begin_tokens, vocab, device)
        if self.decay is not None:  # the eos factor at every history length, in Python floats as transformers has it
            start, factor = self.decay[0] + self.prompt_len, self.decay[1]
            table = [_grown(factor, h - start) - 1 if h > start else 0.0 for h in range(self.max_length + 1)]
            self.decay_factor = torch.tensor(table, dtype=torch.float64).float().to(device)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the per-row state (the encoder ids)."""
        self.encoder_ids = self.encoder_ids[rows]

    def before_penalties(self, scores: torch.Tensor, history: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """``sequence_bias`` then ``encoder_repetition_penalty``."""
        if self.bias_items:
            bias = torch.zeros_like(scores)
            bias += self.single_bias
            for prefixes, last, values in self.multi_bias:
                n = prefixes.shape[1]
                tail = history_tail(history, at, n)
                match = (tail[:, :, None, :] == prefixes).all(-1) & (at >= n)[..., None]  # (B, T, G)
                bias.index_add_(2, last, torch.where(match, values, 0.0))
            scores = scores + bias
        if self.encoder_penalty is not None:
            ids = self.encoder_ids[:, None, :].expand(-1, scores.shape[1], -1)
            chosen = scores.gather(2, ids)
            chosen = torch.where(chosen < 0, chosen * self.encoder_penalty, chosen / self.encoder_penalty)
            scores = scores.scatter(2, ids, chosen)
        return scores

    def encoder_ngram_banned(self, history: torch.Tensor, at: torch.Tensor, vocab: int) -> torch.Tensor | None:
        """(B, T, V) bool of the tokens completing an n-gram of the encoder ids, or None when off / impossible."""
        n = self.encoder_ngram
        if not n or self.encoder_ids.shape[1] < n:
            return None
        grams = self.encoder_ids.unfold(1, n, 1)  # (B, G, n)
        valid = (at >= n - 1)[..., None]
        return ngram_completions(grams, history_tail(history, at, n - 1), vocab, valid)

    def decay_eos(self, scores: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """``exponential_decay_length_penalty`` on the eos logits (finite ones only)."""
        if self.decay is None:
            return scores
        eos = scores[..., self.eos_ids]
        factor = self.decay_factor[at.clamp(max=self.max_length)][..., None]
        penalty = (eos.abs() * factor).masked_fill(~torch.isfinite(eos), 0.0)
        scores[..., self.eos_ids] = eos + penalty  # in place: the pipeline's own float32 copy
        return scores

    def suppress_at_begin(self, scores: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """``begin_suppress_tokens`` banned at the first generated position."""
        if not self.begin_tokens:
            return scores
        return torch.where((at == self.begin_index)[..., None] & self.begin_ban, float("-inf"), scores)


def make_watermark(config, model, strategy: str, device):
    """transformers' watermark processor for ``config.watermarking_config`` (KGW or SynthID), built as transformers
    builds it (over the model's configured vocabulary), or None. Greedy decoding, sampling and beam search only."""
    watermarking = config.watermarking_config
    if watermarking is None:
        return None
    if strategy not in ("sample", "beam") or (config.num_beam_groups or 1) > 1:
        raise NotImplementedError("watermarking_config is supported with greedy decoding, sampling, beam search and "
                                  f"beam sampling, not with the {strategy!r} strategy")
    return watermarking.construct_processor(model.config.get_text_config().vocab_size, device)
