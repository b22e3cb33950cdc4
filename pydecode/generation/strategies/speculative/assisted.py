"""Assisted decoding: a small draft model with the main model's vocabulary proposes tokens, the main model verifies.

``num_assistant_tokens`` and ``num_assistant_tokens_schedule`` are read as transformers reads them: from the
assistant's generation config, unless this call sets them. Schedules: ``"constant"`` drafts that many tokens every
step; ``"heuristic"`` adds 2 after a step where every row accepted all its drafts and removes 1 (down to 1) otherwise,
and leaves the final value in the assistant's generation config for the next call; ``"heuristic_transient"`` does
the same without keeping it. The draft runs over its own KV cache, cropped to the accepted tokens after each step.
"""
from __future__ import annotations

import torch
import transformers

from ....ops.sample import sample_from_processed
from ...context import DecodeContext
from ...model.runner import ModelRunner
from ...model.seq2seq import EncoderDecoderRunner
from ...validate import _vocab_size
from .speculative import DraftState, Verified, last_logits, run_speculative

SCHEDULES = ("constant", "heuristic", "heuristic_transient")


def run(ctx: DecodeContext):
    """Assisted decoding with ``ctx.model_kwargs["assistant_model"]`` (see :mod:`.speculative` for the loop)."""
    assistant = ctx.model_kwargs.pop("assistant_model")
    num_tokens, schedule = check_assisted(ctx.config, ctx.model, assistant)
    proposer = AssistantProposer(ctx, assistant, num_tokens, schedule)
    try:
        return run_speculative(ctx, proposer)
    finally:
        if schedule == "heuristic":
            assistant.generation_config.num_assistant_tokens = proposer.num_tokens


def check_assisted(config, model, assistant) -> tuple[int, str]:
    """``(num_assistant_tokens, schedule)`` after checking them and that ``assistant`` can draft for ``model``."""
    settings = _settings(config, assistant)
    _check_assistant(model, assistant)
    return settings


def _settings(config, assistant) -> tuple[int, str]:
    """``(num_assistant_tokens, schedule)``: this call's values where it changed them, else the assistant's."""
    defaults = transformers.GenerationConfig()
    own = getattr(assistant, "generation_config", None) or defaults
    values = []
    for name in ("num_assistant_tokens", "num_assistant_tokens_schedule"):
        value = getattr(config, name, None)
        if value is None or value == getattr(defaults, name):
            value = getattr(own, name, None) if getattr(own, name, None) is not None else getattr(defaults, name)
        values.append(value)
    num_tokens, schedule = values
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
        raise ValueError(f"num_assistant_tokens must be an integer >= 1, got {num_tokens!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"num_assistant_tokens_schedule must be one of {SCHEDULES}, got {schedule!r}")
    return num_tokens, schedule


def _check_assistant(model, assistant) -> None:
    if not isinstance(assistant, torch.nn.Module) or not hasattr(assistant, "config"):
        raise ValueError(f"assistant_model must be a transformers causal LM, got {type(assistant).__name__}")
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if bool(getattr(assistant.config, "is_encoder_decoder", False)) != encoder_decoder:
        raise ValueError("assistant_model must be " + ("an encoder-decoder model, as the main model" if encoder_decoder
                                                       else "a decoder-only model, as the main model"))
    ours, theirs = _vocab_size(model), _vocab_size(assistant)
    if ours != theirs:
        raise ValueError(f"assistant_model must share the main model's vocabulary: its logits have {theirs} "
                         f"entries, the main model's {ours}")
    if assistant.device != model.device:
        raise ValueError(f"assistant_model is on {assistant.device}, the main model on {model.device}: move it there")
    if assistant.dtype != model.dtype:
        raise ValueError(f"assistant_model has dtype {assistant.dtype}, the main model {model.dtype}: cast it "
                         "(both models' logits are processed and compared the same way)")


class AssistantProposer:
    """Drafts with the assistant over its own cache.

    The draft cache holds every token but the newest: the first step runs the prompt, each later step feeds
    ``[carry, pending]`` (``carry`` is the last draft of the previous step when a row accepted all its drafts, else a
    masked hole; just ``pending`` when no row did), then one token per draft.
    """

    def __init__(self, ctx: DecodeContext, assistant, num_tokens: int, schedule: str):
        rows = ctx.input_ids.shape[0]
        self.ctx, self.assistant = ctx, assistant
        self.runner = None  # built by the first step
        self.num_tokens, self.schedule_name = num_tokens, schedule
        self.carry = torch.zeros(rows, dtype=torch.long, device=ctx.input_ids.device)
        self.has_carry = torch.zeros(rows, dtype=torch.bool, device=ctx.input_ids.device)
        self.any_carry = False  # host copy of has_carry.any()
        self.drafts, self.k = None, 0  # the last step's drafts

    def begin(self, input_ids: torch.Tensor) -> None:
        """Nothing to do before the first step, which runs the prompt through the assistant."""

    def propose(self, state: DraftState, k: int, step: int):
        """Draft ``k`` tokens per row, each drawn from the assistant's logits processed as the main model's are at
        that position (the drafts before it in the history)."""
        params = self.ctx.params
        if self.runner is None:  # the first step: the prompt, whose last token is the pending one
            ctx = self.ctx
            if isinstance(ctx.runner, EncoderDecoderRunner):  # an encoder-decoder assistant encodes the prompt itself
                self.runner = EncoderDecoderRunner(self.assistant, *ctx.runner.encoder_inputs, ctx.attention_mask, 1,
                                                   ctx.max_length)
            else:
                rows, prompt_len = ctx.input_ids.shape
                self.runner = ModelRunner(self.assistant, attention_mask=ctx.attention_mask, batch=rows,
                                          prompt_len=prompt_len, max_length=ctx.max_length,
                                          device=ctx.input_ids.device)
                self.runner.positional = ctx.runner.positional  # the assistant gets token_type_ids and the like too
            logits = self.runner.prefill(ctx.input_ids, **last_logits(self.runner, 1)).logits[:, -1:]
        elif self.any_carry:
            fed = torch.stack([self.has_carry & state.active, state.active], 1)
            logits = self.runner.forward_block(torch.stack([self.carry, state.pending], 1), fed,
                                               **last_logits(self.runner, 1)).logits[:, -1:]
        else:  # no row accepted all its drafts: the pending token alone
            logits = self.runner.forward_block(state.pending[:, None], state.active[:, None]).logits
        tokens, scores = [], []
        for j in range(k):
            processed = state.process(logits.float(), offset=j)[:, 0]
            token = sample_from_processed(processed, params.seeds, step + j, params.temperature)
            tokens.append(token)
            scores.append(processed)
            if j + 1 < k:
                state.write_drafts(token[:, None], state.room, offset=j)
                logits = self.runner.step(token).logits[:, -1:]
        self.drafts, self.k = torch.stack(tokens, 1), k
        num_draft = torch.where(state.active, k, 0)
        return self.drafts, num_draft, torch.stack(scores, 1) if params.do_sample else None

    def accept(self, verified: Verified) -> None:
        """Keep the pending token and the kept drafts that were fed (the last draft never is: it is carried); then
        the schedule's next draft count."""
        kept, active = verified.kept, verified.active
        keep = torch.where(active, torch.clamp(kept + 1, max=self.k), 0)
        self.runner.keep_last(self.k, keep, min(verified.longest, self.k))
        self.has_carry = active & (kept == self.k)
        self.any_carry = verified.longest == self.k + 1
        self.carry = self.drafts[:, -1]
        if self.schedule_name != "constant":
            self.num_tokens = self.num_tokens + 2 if verified.all_accepted else max(1, self.num_tokens - 1)
