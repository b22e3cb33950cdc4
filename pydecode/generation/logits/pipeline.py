"""The per-step logits pipeline shared by the decoding strategies: the call's processors
(:mod:`.processors`, where their order is stated), then the warpers and the draw:

- sampling rows only: temperature (entropy-scaled with ``dynatemp_range``) -> top-k -> top-p -> min-p -> typical,
  and the Gumbel-max draw; greedy rows take the argmax — run fused in one op on the fastest backend (top-H,
  epsilon and eta, when set, on the reference path)
- ``watermarking_config``: transformers' own watermark processor, on the processed scores (then drawn from on the
  reference path)
- ``renormalize_logits`` (log-softmax) for the reported scores

Nothing here reads tensors back to the host.
"""
from __future__ import annotations

import torch

from ...ops.sample import process_logits, sample_from_processed, sample_unchecked
from ...sampling.params import RowParams
from .extra_processors import ExtraProcessors
from .processors import StepView, build_processors, repeat_rows


def warp(scores: torch.Tensor, params: RowParams, width: int = 1) -> torch.Tensor:
    """The warpers (temperature, top-H, top-k, top-p, min-p, typical, epsilon, eta) on ``scores`` (B * width, V),
    whose rows are ``width`` positions of each of the B rows of ``params``."""
    rows = repeat_rows(width)
    return process_logits(scores, params.temperature_of(scores, width),
                          *[rows(v) for v in (params.top_k, params.top_p, params.min_p, params.typical_p)],
                          **{name: rows(v) for name, v in params.cutoffs.items()})


def draw(scores: torch.Tensor, params: RowParams, seeds: torch.Tensor, step: int, backend,
         return_logprobs: bool = False):
    """The warpers and the draw fused in one op: the tokens of ``scores`` (B, V) (argmax where the temperature is 0)
    from the ``(seeds, step)`` streams; with ``return_logprobs`` also their log-probabilities (see
    :meth:`LogitsPipeline.select_with_logprobs`)."""
    return sample_unchecked(scores, params.temperature_of(scores), params.top_k, params.top_p, params.min_p, seeds,
                            step, params.typical_p, backend, return_logprobs=return_logprobs, cutoffs=params.cutoffs)


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

    def __init__(self, *, config, params: RowParams, prompt_ids, attention_mask, eos_ids, logits_processor=None,
                 backend=None, encoder_ids=None, guidance=None, watermark=None, constraint=None):
        self.config = config
        self.params = params
        self.prompt_ids = prompt_ids
        self.attention_mask = attention_mask
        self.prompt_len = prompt_ids.shape[1]
        self.eos_ids = eos_ids
        self.logits_processor = logits_processor
        self.backend = backend
        self.guidance = guidance
        self.watermark = watermark
        self.constraint = constraint
        self.extra = ExtraProcessors(config, prompt_ids if encoder_ids is None else encoder_ids, self.prompt_len,
                                     eos_ids)
        self.steps = self.penalties = None  # built once the vocabulary (the logits' width) is known

    def prepare(self, vocab: int, device) -> None:
        """Build the call's processors (once), for callers that use them without going through :meth:`process`."""
        if self.steps is None:
            self.steps, self.penalties = build_processors(
                self.config, self.params, self.prompt_ids, self.attention_mask, self.eos_ids, self.logits_processor,
                self.backend, self.extra, self.guidance, self.constraint, vocab, device)

    def process(self, logits: torch.Tensor, history: torch.Tensor, cur_len: int) -> torch.Tensor:
        """The processors on a float32 copy of the raw logits (B, V); ``history`` is (B, cur_len) of all tokens so
        far."""
        self.prepare(logits.shape[-1], logits.device)
        at = torch.full((logits.shape[0], 1), cur_len, device=logits.device)
        view = StepView(history, at, at[:, 0], cur_len=cur_len)
        scores = logits[:, None]
        for step in self.steps:
            if step.active(cur_len):
                scores = step.apply(scores, view)
        return scores[:, 0]

    def any_active(self, cur_len: int, logits: torch.Tensor) -> bool:
        """Whether a processor may change the scores at ``cur_len`` (False: :meth:`process` returns its input
        unchanged, and beam search fuses the log-softmax into its top-k kernel); ``logits`` (B, V) size the
        processors on first use."""
        self.prepare(logits.shape[-1], logits.device)
        return any(step.active(cur_len) for step in self.steps)

    def select(self, scores: torch.Tensor, step: int, want_processed: bool = False, history=None):
        """Steps 4-5: the next token of every row, and the processed scores (warpers applied) if asked for;
        ``history`` (B, cur_len) is what a watermark reads."""
        p = self.params
        if not want_processed and self.watermark is None:
            return draw(scores, p, p.seeds, step, self.backend), None
        temperature = p.temperature_of(scores)
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
        return draw(scores, self.params, self.params.seeds, step, self.backend, return_logprobs=True)

    def reorder(self, rows: torch.Tensor) -> None:
        """Beam search moved row ``rows[i]`` to row i: the processors' per-row state follows."""
        for step in self.steps or ():
            step.reorder(rows)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (a 1-D index tensor) of the per-row state (after :meth:`prepare`)."""
        self.params = self.params.select_rows(rows)
        self.extra.select_rows(rows)
        for step in self.steps or ():
            step.select_rows(rows)

    def record(self, tokens: torch.Tensor) -> None:
        """Count the chosen tokens for the frequency / presence / repetition penalties."""
        if self.penalties is not None:
            self.penalties.record(tokens)
