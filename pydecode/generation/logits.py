"""The per-step logits pipeline shared by the decoding strategies.

Order (transformers' processor order, then the warpers, then the draw):

0. classifier-free guidance (``guidance_scale``, :mod:`.guidance`), then ``sequence_bias`` and
   ``encoder_repetition_penalty`` (:mod:`.extra_processors`, as the others marked *)
1. penalties: repetition (prompt + generated), then frequency / presence (generated) — one fused op
2. bans from the history: ``no_repeat_ngram_size``, ``encoder_no_repeat_ngram_size`` *, ``bad_words_ids``
3. ``min_length`` / ``min_new_tokens`` (eos banned), ``prefix_allowed_tokens_fn`` (:mod:`.prefix_constraint`),
   ``forced_bos_token_id`` (at length 1: the decoder's first step), ``forced_eos_token_id``,
   ``remove_invalid_values``, ``exponential_decay_length_penalty`` *, ``suppress_tokens``,
   ``begin_suppress_tokens`` *, then the user's own ``logits_processor`` list
4. sampling rows only: temperature (entropy-scaled with ``dynatemp_range``) -> top-k -> top-p -> min-p -> typical, and the Gumbel-max draw; greedy rows take
   the argmax — steps 4 run fused in one op on the fastest backend (top-H, epsilon and eta, when set, on the
   reference path)
5. ``watermarking_config``: transformers' own watermark processor, on the processed scores (then drawn from on the
   reference path)
6. ``renormalize_logits`` (log-softmax) for the reported scores

Nothing here reads tensors back to the host.
"""
from __future__ import annotations

import torch

from ..ops.penalties import penalties_unchecked, record_tokens_
from ..ops.reference import bad_words_banned, no_repeat_ngram_banned, prompt_token_mask
from ..ops.reference.constraints import token_mask
from ..ops.reference.sampling import process_logits, sample_from_processed
from ..ops.sampling import sample_unchecked
from ..sampling.params import RowParams
from .extra_processors import ExtraProcessors


class LogitsPipeline:
    """Turns raw next-token logits into processed scores and chosen tokens, step by step.

    Parameters
    ----------
    config : the resolved transformers GenerationConfig
    params : per-row :class:`RowParams`
    prompt_ids : (B, L0) int64 prompt (after left padding and expansion)
    attention_mask : (B, L0) or None
    eos_ids : (E,) int64 tensor or None
    logits_processor : optional transformers ``LogitsProcessorList`` applied after pydecode's processors
    backend : forced backend name or None for auto
    encoder_ids : (B, Le) int64 encoder input of an encoder-decoder (expanded like the rows); None: ``prompt_ids``
    guidance : the call's :class:`~.guidance.Guidance` or None
    watermark : the transformers processor ``watermarking_config.construct_processor`` built for the call, or None
    constraint : the call's :class:`~.prefix_constraint.PrefixConstraint` or None
    """

    def __init__(self, config, params: RowParams, prompt_ids, attention_mask, eos_ids, logits_processor=None,
                 backend=None, encoder_ids=None, guidance=None, watermark=None, constraint=None):
        self.config = config
        self.params = params
        self.prompt_ids = prompt_ids
        self.attention_mask = attention_mask
        self.prompt_len = prompt_ids.shape[1]
        self.eos_ids = eos_ids
        self.logits_processor = logits_processor
        self.backend = backend
        self.token_counts = None
        self.prompt_mask = None
        self.guidance = guidance
        self.watermark = watermark
        self.constraint = constraint
        self.word_ban = self.suppress_ban = None
        self.bad_words = None
        self.extra = ExtraProcessors(config, prompt_ids if encoder_ids is None else encoder_ids, self.prompt_len,
                                     eos_ids)
        self._ready = False

    def _lazy_init(self, vocab: int, device) -> None:
        """Allocate the per-row state once the vocabulary size (the logits' width) is known."""
        batch = self.prompt_ids.shape[0]
        if self.params.has_penalties:
            self.token_counts = torch.zeros(batch, vocab, dtype=torch.int32, device=device)
            if self.params.has_repetition_penalty:
                self.prompt_mask = prompt_token_mask(self.prompt_ids.to(device), vocab, self.attention_mask)
        suppress = [t for t in self.config.suppress_tokens or [] if 0 <= t < vocab]
        words = [list(w) for w in (self.config.bad_words_ids or [])]
        eos = set(self.eos_ids.tolist()) if self.eos_ids is not None else set()
        words = [w for w in words if not (len(w) == 1 and w[0] in eos)]  # transformers never bans eos this way
        for word in words:
            if any(not (0 <= t < vocab) for t in word):
                raise ValueError(f"bad_words_ids must hold token ids in [0, {vocab}), got {word}")
        self.bad_words = [(torch.tensor(w[:-1], dtype=torch.long, device=device), w[-1]) for w in words if len(w) > 1]
        self.word_ban = token_mask([w[0] for w in words if len(w) == 1], vocab, device)
        self.suppress_ban = token_mask(suppress, vocab, device)
        self.extra.prepare(vocab, device)
        self._ready = True

    def prepare(self, vocab: int, device) -> None:
        """Allocate the per-row state now, for callers that read it without going through :meth:`process`."""
        if not self._ready:
            self._lazy_init(vocab, device)

    def process(self, logits: torch.Tensor, history: torch.Tensor, cur_len: int) -> torch.Tensor:
        """Steps 1-3 on a float32 copy of the raw logits (B, V); ``history`` is (B, cur_len) of all tokens so far."""
        scores = logits
        if not self._ready:
            self._lazy_init(scores.shape[-1], scores.device)
        vocab = scores.shape[-1]
        p, config, extra = self.params, self.config, self.extra
        if self.guidance is not None:
            scores = self.guidance(scores, history)
        positioned = extra.active or self.constraint is not None
        at = torch.full((scores.shape[0], 1), cur_len, device=scores.device) if positioned else None
        if extra.active:
            scores = extra.before_penalties(scores[:, None], history, at)[:, 0]
        if self.token_counts is not None:
            penalties_unchecked(scores, self.token_counts, self.prompt_mask, p.repetition_penalty,
                                p.frequency_penalty, p.presence_penalty, self.backend)
        if config.no_repeat_ngram_size:
            scores.masked_fill_(no_repeat_ngram_banned(history, config.no_repeat_ngram_size, vocab), float("-inf"))
        if extra.active and (banned := extra.encoder_ngram_banned(history, at, vocab)) is not None:
            scores.masked_fill_(banned[:, 0], float("-inf"))
        if self.bad_words:
            scores.masked_fill_(bad_words_banned(history, self.bad_words, vocab), float("-inf"))
        if self.word_ban is not None:
            scores.masked_fill_(self.word_ban, float("-inf"))
        if self.eos_ids is not None and self._eos_banned(cur_len):
            scores[:, self.eos_ids] = float("-inf")
        if self.constraint is not None:
            scores = self.constraint(scores[:, None], history, at)[:, 0]
        if config.forced_bos_token_id is not None and cur_len == 1:
            scores.fill_(float("-inf"))
            scores[:, config.forced_bos_token_id] = 0.0
        if config.forced_eos_token_id is not None and cur_len == config.max_length - 1:
            forced = config.forced_eos_token_id
            forced = [forced] if isinstance(forced, int) else list(forced)
            scores.fill_(float("-inf"))
            scores[:, forced] = 0.0
        if config.remove_invalid_values:
            scores = torch.nan_to_num(scores, nan=0.0, posinf=torch.finfo(scores.dtype).max,
                                      neginf=torch.finfo(scores.dtype).min)
        if extra.active:
            scores = extra.decay_eos(scores[:, None], at)[:, 0]
        if self.suppress_ban is not None:
            scores.masked_fill_(self.suppress_ban, float("-inf"))
        if extra.active:
            scores = extra.suppress_at_begin(scores[:, None], at)[:, 0]
        if self.logits_processor:
            scores = self.logits_processor(history, scores)
        return scores

    def _eos_banned(self, cur_len: int) -> bool:
        min_length = self.config.min_length or 0
        min_new = self.config.min_new_tokens or 0
        return cur_len < min_length or cur_len - self.prompt_len < min_new

    def select(self, scores: torch.Tensor, step: int, want_processed: bool = False, history=None):
        """Steps 4-5: the next token of every row, and the processed scores (warpers applied) if asked for;
        ``history`` (B, cur_len) is what a watermark reads."""
        p = self.params
        temperature = p.temperature_of(scores)
        if not want_processed and self.watermark is None:
            tokens = sample_unchecked(scores, temperature, p.top_k, p.top_p, p.min_p, p.seeds, step, p.typical_p,
                                      self.backend, cutoffs=p.cutoffs)
            return tokens, None
        processed = process_logits(scores, temperature, p.top_k, p.top_p, p.min_p, p.typical_p, **p.cutoffs)
        if self.watermark is not None:
            processed = self.watermark(history, processed)
        tokens = sample_from_processed(processed, p.seeds, step, temperature)
        if self.config.renormalize_logits:
            processed = processed.log_softmax(dim=-1)
        return tokens, processed

    def select_with_logprobs(self, scores: torch.Tensor, step: int):
        """Step 4 with the drawn tokens' log-probabilities from the same fused kernel: ``(tokens, logprob,
        processed_logprob)``, the latter two (B,) float32, under ``scores`` and under the processed distribution."""
        p = self.params
        return sample_unchecked(scores, p.temperature_of(scores), p.top_k, p.top_p, p.min_p, p.seeds, step,
                                p.typical_p, self.backend, return_logprobs=True, cutoffs=p.cutoffs)

    def changes_scores(self, cur_len: int) -> bool:
        """False when :meth:`process` would return its input unchanged at ``cur_len`` (beam search then fuses
        the log-softmax into its top-k kernel)."""
        c = self.config
        return bool(
            self.params.has_penalties or c.no_repeat_ngram_size or c.bad_words_ids or c.suppress_tokens
            or (self.eos_ids is not None and self._eos_banned(cur_len)) or c.forced_eos_token_id is not None
            or (c.forced_bos_token_id is not None and cur_len == 1)
            or c.remove_invalid_values or self.logits_processor or self.extra.active or self.guidance is not None
            or self.watermark is not None or self.constraint is not None
        )

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam search moved row ``rows[i]`` to row i: carry the per-row token counts along.

        The prompt mask needs no move: beams only ever come from rows of the same prompt.
        """
        if self.token_counts is not None:
            self.token_counts = self.token_counts.index_select(0, rows)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a 1-D index tensor) of the per-row state (after the first :meth:`process`)."""
        self.params = self.params.select_rows(rows)
        if self.token_counts is not None:
            self.token_counts = self.token_counts[rows]
        if self.prompt_mask is not None:
            self.prompt_mask = self.prompt_mask[rows]
        self.extra.select_rows(rows)
        if self.constraint is not None:
            self.constraint.select_rows(rows)
        if self.guidance is not None:
            self.guidance.select_rows(rows)

    def record(self, tokens: torch.Tensor) -> None:
        """Count the chosen tokens for the frequency / presence / repetition penalties."""
        if self.token_counts is not None:
            record_tokens_(self.token_counts, tokens, backend=self.backend)

