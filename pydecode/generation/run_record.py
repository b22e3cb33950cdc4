"""Per emitted token of the speculative strategies: what ``return_dict_in_generate`` asks for, as plain decoding
reports it (``scores``, ``logits``, ``logprobs``, ``processed_logprobs``, ``top_logprobs``). Positions after a row
finished hold zeros."""
from __future__ import annotations

import torch

from ..ops.logprobs import token_logprobs
from .output import requested_logprobs


class RunRecorder:
    """Buffers (B, new_tokens + 1, ...) filled a run at a time; the last slot takes the writes of unkept positions."""

    def __init__(self, config, batch: int, new_tokens: int, backend):
        on = bool(config.return_dict_in_generate)
        self.renormalize = bool(config.renormalize_logits)
        self.top_n, self.logprobs = requested_logprobs(config)
        self.want = {"scores": on and bool(config.output_scores), "logits": on and bool(config.output_logits)}
        self.buffers = {}
        self.batch, self.new_tokens, self.backend = batch, new_tokens, backend

    def add(self, raw: torch.Tensor, processed: torch.Tensor, tokens: torch.Tensor, offset: torch.Tensor,
            count: torch.Tensor) -> None:
        """Store positions ``j < count[b]`` of (B, T, V) ``raw`` / ``processed`` and (B, T) ``tokens`` as new tokens
        ``offset[b] + j``."""
        batch, width, vocab = raw.shape
        values = {}
        if self.want["scores"]:
            values["scores"] = processed.log_softmax(-1) if self.renormalize else processed
        if self.want["logits"]:
            values["logits"] = raw
        if self.logprobs:
            flat = tokens.reshape(-1)
            chosen, top_values, top_ids = token_logprobs(raw.reshape(-1, vocab), flat, self.top_n,
                                                         backend=self.backend)
            values["logprobs"] = chosen.view(batch, width)
            values["processed_logprobs"] = token_logprobs(processed.reshape(-1, vocab), flat, 0,
                                                          backend=self.backend)[0].view(batch, width)
            if self.top_n:
                values["top_logprobs"] = top_values.reshape(batch, width, -1)
                values["top_logprob_ids"] = top_ids.reshape(batch, width, -1)
        slots = torch.arange(width, device=raw.device)
        index = torch.where(slots[None, :] < count[:, None], offset[:, None] + slots, self.new_tokens)
        for name, value in values.items():
            if name not in self.buffers:
                self.buffers[name] = value.new_zeros(self.batch, self.new_tokens + 1, *value.shape[2:])
            at = index.view(batch, width, *([1] * (value.dim() - 2))).expand_as(value)
            self.buffers[name].scatter_(1, at, value)

    def fields(self, length: int) -> dict:
        """The output fields for ``length`` new tokens: per-step tuples for scores / logits, (B, T) logprobs."""
        fields = {}
        for name in ("scores", "logits"):
            fields[name] = tuple(self.buffers[name][:, t] for t in range(length)) if self.want[name] else None
        for name in ("logprobs", "processed_logprobs", "top_logprobs", "top_logprob_ids"):
            fields[name] = self.buffers[name][:, :length] if name in self.buffers else None
        return fields
