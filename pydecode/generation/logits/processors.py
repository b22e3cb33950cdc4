"""The logits processors of one generate() call: one ordered list, built once, run by every strategy.

The order (transformers' processor order; the warpers and the draw follow in :class:`~.logits.LogitsPipeline`):

0. classifier-free guidance (``guidance_scale``, :mod:`.guidance`; one position per row only)
1. ``sequence_bias``, ``encoder_repetition_penalty`` (:mod:`.extra_processors`, as the others marked *); a
   :class:`~pydecode.Sampler`'s per-row one-token biases
2. penalties: repetition (prompt + generated), then frequency / presence (generated) — one fused op
3. bans from the history: ``no_repeat_ngram_size``, ``encoder_no_repeat_ngram_size`` *, ``bad_words_ids`` (multi-
   then one-token words; per row in a :class:`~pydecode.Sampler`, which keeps one-token words and
   ``suppress_tokens`` in one ban table: bans commute)
4. ``min_length`` / ``min_new_tokens`` (eos banned), ``prefix_allowed_tokens_fn`` (:mod:`.prefix_constraint`),
   ``forced_bos_token_id`` (at length 1), ``forced_eos_token_id`` (at ``max_length - 1``),
   ``remove_invalid_values``, ``exponential_decay_length_penalty`` *, ``suppress_tokens``,
   ``begin_suppress_tokens`` *, then the user's own ``logits_processor`` list

:data:`ORDER` states this order in code: :func:`in_order` puts any list of processors in it, so generate() and
:class:`~pydecode.Sampler` (which builds its steps from the same classes, with per-row parameters and state it
gathers for the step's rows) run one pipeline.

Each processor has ``active(cur_len)`` (may it change the scores at history length ``cur_len``; None: at some
position of a block), ``apply(scores, view)`` on (rows, T, V) float32 scores — T positions per row, the speculative
strategies' drafts — and, where it keeps per-row state, ``select_rows(rows)`` / ``reorder(rows)``. Per-row state
shared by several processors (the :class:`~.extra_processors.ExtraProcessors`' encoder ids) moves with the
pipeline, not with them.
Nothing here reads tensors back to the host.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...ops.constraints import bad_words_banned, history_tail, ngram_completions, no_repeat_ngram_banned, token_mask
from ...ops.penalties import penalties_unchecked, prompt_token_mask, record_tokens_unchecked

_NEG_INF = float("-inf")


@dataclass
class StepView:
    """What the processors read for a block of positions.

    ``history`` (B, H): the rows' tokens (per step: exactly the tokens so far; per block: a buffer holding the
    drafts after ``lengths``); ``at`` (B, T): the history length each position sees; ``lengths`` (B,): the tokens
    the penalty counts hold; ``offset``: drafts before the block's first position; ``cur_len``: the host's length
    of a one-position step (None for a block); ``common_length``: the host's length of every running row before
    the drafts, for the user's processors on a block (None when unknown)."""

    history: torch.Tensor
    at: torch.Tensor
    lengths: torch.Tensor
    offset: int = 0
    cur_len: int | None = None
    common_length: int | None = None


class Processor:
    """A step of the list; subclasses override :meth:`apply` and, where it depends on the length, :meth:`active`."""

    def active(self, cur_len: int | None) -> bool:
        return True

    def apply(self, scores: torch.Tensor, view: StepView) -> torch.Tensor:
        raise NotImplementedError

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` of the per-row state (stateless processors keep nothing)."""

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam search moved row ``rows[i]`` to row i (stateless processors keep nothing)."""


class Guidance(Processor):
    def __init__(self, guidance):
        self.guidance = guidance

    def apply(self, scores, view):
        if view.cur_len is None:
            return scores  # the speculative strategies do not run guidance
        return self.guidance(scores[:, 0], view.history)[:, None]

    def select_rows(self, rows):
        self.guidance.select_rows(rows)


class BeforePenalties(Processor):
    def __init__(self, extra):
        self.extra = extra

    def apply(self, scores, view):
        return self.extra.before_penalties(scores, view.history, view.at).contiguous()


class TokenBias(Processor):
    """Per-row one-token biases: ``values[e]`` added to token ``tokens[e]`` of the rows where ``match[:, e]``."""

    def __init__(self, match: torch.Tensor, tokens: torch.Tensor, values: torch.Tensor):
        self.match, self.tokens, self.values = match, tokens, values

    def apply(self, scores, view):
        added = torch.where(self.match, self.values.to(scores.dtype), 0.0)[:, None]  # (B, 1, E)
        return scores.index_add_(2, self.tokens, added.expand(-1, scores.shape[1], -1))


class Penalties(Processor):
    """Repetition / frequency / presence penalties over per-row token counts (a block position also counts the
    drafts before it)."""

    def __init__(self, params, prompt_ids, attention_mask, backend):
        self.params, self.prompt_ids, self.attention_mask, self.backend = params, prompt_ids, attention_mask, backend
        self.token_counts = self.prompt_mask = None

    @classmethod
    def of_rows(cls, params, token_counts: torch.Tensor, prompt_mask: torch.Tensor | None, backend) -> Penalties:
        """Penalties over per-row state the caller keeps: (B, V) int32 counts and (B, V) bool prompt presence
        (None: no repetition penalty)."""
        penalties = cls(params, None, None, backend)
        penalties.token_counts, penalties.prompt_mask = token_counts, prompt_mask
        return penalties

    def prepare(self, vocab: int, device) -> None:
        batch = self.prompt_ids.shape[0]
        self.token_counts = torch.zeros(batch, vocab, dtype=torch.int32, device=device)
        if self.params.has_repetition_penalty:
            self.prompt_mask = prompt_token_mask(self.prompt_ids.to(device), vocab, self.attention_mask)

    def apply(self, scores, view):
        p, counts = self.params, self.token_counts
        scores = scores.contiguous()  # penalised in place through a (B * T, V) view
        batch, width, vocab = scores.shape
        drafts = view.offset + width - 1  # drafts in the history of the block's last position
        if drafts == 0:
            block = counts
        else:
            draft = torch.arange(drafts, device=counts.device)
            tokens = view.history.gather(1, (view.lengths[:, None] + draft).clamp(max=view.history.shape[1] - 1))
            first = (draft - view.offset + 1).clamp(min=0)  # the first position whose history holds draft i
            added = torch.zeros(batch, width, vocab, dtype=counts.dtype, device=counts.device)
            added.view(batch, -1).scatter_add_(1, first * vocab + tokens, torch.ones_like(tokens, dtype=counts.dtype))
            block = (counts[:, None] + added.cumsum(1, dtype=counts.dtype)).view(batch * width, vocab)
        prompt_mask = self.prompt_mask
        if prompt_mask is not None and width > 1:
            prompt_mask = prompt_mask.repeat_interleave(width, 0)
        rows = repeat_rows(width)
        penalties_unchecked(scores.view(batch * width, vocab), block, prompt_mask, rows(p.repetition_penalty),
                            rows(p.frequency_penalty), rows(p.presence_penalty), self.backend)
        return scores

    def record(self, tokens: torch.Tensor) -> None:
        record_tokens_unchecked(self.token_counts, tokens, self.backend)

    def count_tokens(self, run: torch.Tensor, count: torch.Tensor) -> None:
        """Count each row's kept tokens ``run[b, :count[b]]`` (B, T)."""
        kept = torch.arange(run.shape[1], device=run.device) < count[:, None]
        self.token_counts.scatter_add_(1, run, kept.to(self.token_counts.dtype))

    def select_rows(self, rows):
        self.params = self.params.select_rows(rows)
        self.token_counts = self.token_counts[rows]
        if self.prompt_mask is not None:
            self.prompt_mask = self.prompt_mask[rows]

    def reorder(self, rows):
        # the prompt mask needs no move: beams only ever come from rows of the same prompt; in place, so that a
        # compiled beam step keeps the counts at their address
        self.token_counts.copy_(self.token_counts.index_select(0, rows))


class NoRepeatNgram(Processor):
    """No n-gram of ``size`` twice; ``rows`` (B,) bool: the rows it applies to (None: all)."""

    def __init__(self, size: int, rows: torch.Tensor | None = None):
        self.size, self.rows = size, rows

    def apply(self, scores, view):
        n, vocab = self.size, scores.shape[-1]
        if view.cur_len is not None:
            banned = no_repeat_ngram_banned(view.history, n, vocab)[:, None]
        else:
            grams = view.history[:, :-1].unfold(1, n, 1)  # (B, G, n) every n-gram of the buffer (last: scratch)
            inside = torch.arange(grams.shape[1], device=view.at.device) <= (view.at - n)[..., None]
            banned = ngram_completions(grams, history_tail(view.history, view.at, n - 1), vocab, inside)
        if self.rows is not None:
            banned &= self.rows[:, None, None]
        return scores.masked_fill_(banned, _NEG_INF)


class EncoderNgram(Processor):
    def __init__(self, extra):
        self.extra = extra

    def apply(self, scores, view):
        banned = self.extra.encoder_ngram_banned(view.history, view.at, scores.shape[-1])
        return scores if banned is None else scores.masked_fill_(banned, _NEG_INF)


class BadWords(Processor):
    """Multi-token bad words (their last token, where the history ends with the rest); ``member`` (B, W) bool:
    which words each row bans (None: all)."""

    def __init__(self, words: list[tuple[torch.Tensor, int]], member: torch.Tensor | None = None):
        self.words, self.member = words, member

    def apply(self, scores, view):
        vocab = scores.shape[-1]
        if view.cur_len is not None and self.member is None:
            return scores.masked_fill_(bad_words_banned(view.history, self.words, vocab)[:, None], _NEG_INF)
        batch, width = view.at.shape
        banned = torch.zeros(batch, width, vocab, dtype=torch.bool, device=scores.device)
        for w, (prefix, last) in enumerate(self.words):
            n = prefix.shape[0]
            ends = (history_tail(view.history, view.at, n) == prefix).all(-1) & (view.at >= n)
            banned[..., last] |= ends if self.member is None else ends & self.member[:, w, None]
        return scores.masked_fill_(banned, _NEG_INF)


class TokenBan(Processor):
    """A mask of banned tokens: (V,), or (B, 1, V) per row."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def apply(self, scores, view):
        return scores.masked_fill_(self.mask, _NEG_INF)


class OneTokenBadWords(TokenBan):
    """One-token bad words."""


class SuppressTokens(TokenBan):
    """``suppress_tokens``."""


class MinLengthEos(Processor):
    """eos banned below ``min_length`` tokens or ``min_new_tokens`` new ones. ``eos_ids``: (E,) ids, or (B, V) bool
    per row; ``min_new_tokens`` and ``prompt_len``: ints, or (B, 1) per row."""

    def __init__(self, eos_ids: torch.Tensor, min_length: int, min_new_tokens, prompt_len):
        self.eos_ids, self.min_length, self.min_new, self.prompt_len = eos_ids, min_length, min_new_tokens, prompt_len

    def active(self, cur_len):
        if cur_len is None:
            return True
        return cur_len < self.min_length or cur_len - self.prompt_len < self.min_new

    def apply(self, scores, view):
        ban = (view.at < self.min_length) | (view.at - self.prompt_len < self.min_new)
        if self.eos_ids.dtype == torch.bool:
            return scores.masked_fill_(self.eos_ids[:, None] & ban[..., None], _NEG_INF)
        scores[..., self.eos_ids] = scores[..., self.eos_ids].masked_fill(ban[..., None], _NEG_INF)
        return scores


class Constraint(Processor):
    def __init__(self, constraint):
        self.constraint = constraint

    def apply(self, scores, view):
        return self.constraint(scores, view.history, view.at)

    def select_rows(self, rows):
        self.constraint.select_rows(rows)


class ForcedToken(Processor):
    """Every token but ``token`` (an id or a list of ids) banned at history length ``at_length``."""

    def __init__(self, token, at_length: int):
        self.tokens = [token] if isinstance(token, int) else list(token)
        self.at_length = at_length

    def active(self, cur_len):
        return cur_len is None or cur_len == self.at_length

    def apply(self, scores, view):
        only = torch.full(scores.shape[-1:], _NEG_INF, device=scores.device)
        only[self.tokens] = 0.0
        return scores.copy_(torch.where((view.at == self.at_length)[..., None], only, scores))


class RemoveInvalid(Processor):
    def apply(self, scores, view):
        info = torch.finfo(scores.dtype)
        return torch.nan_to_num(scores, nan=0.0, posinf=info.max, neginf=info.min)


class DecayEos(Processor):
    def __init__(self, extra):
        self.extra = extra

    def apply(self, scores, view):
        return self.extra.decay_eos(scores, view.at)


class SuppressAtBegin(Processor):
    def __init__(self, extra):
        self.extra = extra

    def apply(self, scores, view):
        return self.extra.suppress_at_begin(scores, view.at)


class UserProcessors(Processor):
    """The user's ``logits_processor`` list, once per position with the history up to it, as transformers calls
    it; on a block its (B, h) history needs every running row at one length (``view.common_length``)."""

    def __init__(self, processors):
        self.processors = processors

    def apply(self, scores, view):
        if view.cur_len is not None:
            return self.processors(view.history, scores[:, 0])[:, None]
        start = view.common_length + view.offset
        return torch.stack([self.processors(view.history[:, : start + j], scores[:, j].contiguous())
                            for j in range(scores.shape[1])], 1)


def build_processors(config, params, prompt_ids, attention_mask, eos_ids, logits_processor, backend, extra,
                     guidance, constraint, vocab: int, device) -> tuple[list[Processor], Penalties | None]:
    """The call's processors in the order above (only those its settings turn on) and its penalties processor
    (which also counts the chosen tokens), or None."""
    steps: list[Processor] = []
    if guidance is not None:
        steps.append(Guidance(guidance))
    extra.prepare(vocab, device)
    if extra.bias_items or extra.encoder_penalty is not None:
        steps.append(BeforePenalties(extra))
    penalties = None
    if params.has_penalties:
        penalties = Penalties(params, prompt_ids, attention_mask, backend)
        penalties.prepare(vocab, device)
        steps.append(penalties)
    if config.no_repeat_ngram_size:
        steps.append(NoRepeatNgram(config.no_repeat_ngram_size))
    if extra.encoder_ngram:
        steps.append(EncoderNgram(extra))
    eos = set(eos_ids.tolist()) if eos_ids is not None else set()
    words = config.bad_words_ids or []
    if not isinstance(words, (list, tuple)) or not all(
            isinstance(w, (list, tuple)) and w and all(isinstance(t, int) and not isinstance(t, bool) for t in w)
            for w in words):
        raise ValueError(f"bad_words_ids must be a list of non-empty lists of token ids, got {words!r}")
    words = [list(w) for w in words]
    words = [w for w in words if not (len(w) == 1 and w[0] in eos)]  # transformers never bans eos this way
    for word in words:
        if any(not (0 <= t < vocab) for t in word):
            raise ValueError(f"bad_words_ids must hold token ids in [0, {vocab}), got {word}")
    long_words = [(torch.tensor(w[:-1], dtype=torch.long, device=device), w[-1]) for w in words if len(w) > 1]
    if long_words:
        steps.append(BadWords(long_words))
    if (word_ban := token_mask([w[0] for w in words if len(w) == 1], vocab, device)) is not None:
        steps.append(OneTokenBadWords(word_ban))
    if eos_ids is not None and (config.min_length or config.min_new_tokens):
        steps.append(MinLengthEos(eos_ids, config.min_length or 0, config.min_new_tokens or 0, prompt_ids.shape[1]))
    if constraint is not None:
        steps.append(Constraint(constraint))
    if config.forced_bos_token_id is not None:
        steps.append(ForcedToken(config.forced_bos_token_id, 1))
    if config.forced_eos_token_id is not None:
        steps.append(ForcedToken(config.forced_eos_token_id, config.max_length - 1))
    if config.remove_invalid_values:
        steps.append(RemoveInvalid())
    if extra.decay is not None:
        steps.append(DecayEos(extra))
    suppress = list(config.suppress_tokens or [])
    if any(not 0 <= t < vocab for t in suppress):  # dropping them silently would ignore a wrong id list
        raise ValueError(f"suppress_tokens must hold token ids in [0, {vocab}), got "
                         f"{sorted(t for t in set(suppress) if not 0 <= t < vocab)}")
    if (suppress_ban := token_mask(suppress, vocab, device)) is not None:
        steps.append(SuppressTokens(suppress_ban))
    if extra.begin_tokens:
        steps.append(SuppressAtBegin(extra))
    if logits_processor:
        steps.append(UserProcessors(logits_processor))
    return in_order(steps), penalties


ORDER = (Guidance, BeforePenalties, TokenBias, Penalties, NoRepeatNgram, EncoderNgram, BadWords, OneTokenBadWords,
         MinLengthEos, Constraint, ForcedToken, RemoveInvalid, DecayEos, SuppressTokens, SuppressAtBegin,
         UserProcessors)


def in_order(steps: list[Processor]) -> list[Processor]:
    """``steps`` in the pipeline's order (steps of one class keep theirs: forced bos before forced eos)."""
    return sorted(steps, key=lambda step: ORDER.index(type(step)))


def repeat_rows(width: int):
    """Per-row parameters (scalars or (B,) tensors) for B * width flattened positions."""
    return lambda v: v.repeat_interleave(width) if isinstance(v, torch.Tensor) and width > 1 else v
