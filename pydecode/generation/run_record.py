"""Per emitted token of the speculative strategies: what ``return_dict_in_generate`` asks for, as plain decoding
reports it (``scores``, ``logits``, ``logprobs``, ``processed_logprobs``, ``top_logprobs``). Positions after a row
finished hold zeros."""
from __future__ import annotations

import torch

from ..ops.logprobs import token_logprobs_unchecked
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
            chosen, top_values, top_ids = token_logprobs_unchecked(raw.reshape(-1, vocab), flat, self.top_n,
                                                                   self.backend)
            values["logprobs"] = chosen.view(batch, width)
            values["processed_logprobs"] = token_logprobs_unchecked(processed.reshape(-1, vocab), flat, 0,
                                                                    self.backend)[0].view(batch, width)
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


class ForwardRecorder:
    """Per emitted token, the main model's attentions / hidden states for ``return_dict_in_generate``, split out of
    the verification forwards as transformers' assisted decoding splits them (it runs one prompt at a time): the
    first token gets the prompt's forward (every prompt position), each later token the query of the position that
    predicted it, over the keys up to it."""

    def __init__(self, config, batch: int, strategy: str):
        on = bool(config.return_dict_in_generate)
        self.want = {"attentions": on and bool(config.output_attentions),
                     "hidden_states": on and bool(config.output_hidden_states)}
        if any(self.want.values()) and batch != 1:
            raise NotImplementedError(f"output_attentions / output_hidden_states with {strategy} decoding are "
                                      "supported for one prompt at a time (as in transformers)")
        self.store = {name: [] for name in (*self.want, "cross_attentions")}

    def add(self, outputs, start: int, first: int, count: int) -> None:
        """Record new tokens at positions ``first .. first + count - 1`` from ``outputs``, a forward whose first query
        is position ``start`` (0: the prompt's forward)."""
        for position in range(first, first + count):
            rows = slice(0, position) if position == first and start == 0 else \
                slice(position - 1 - start, position - start)
            if self.want["attentions"]:
                self.store["attentions"].append(tuple(a[:, :, rows, :position] for a in outputs.attentions))
                if getattr(outputs, "cross_attentions", None) is not None:  # an encoder-decoder's: every encoder key
                    self.store["cross_attentions"].append(tuple(a[:, :, rows] for a in outputs.cross_attentions))
            if self.want["hidden_states"]:
                self.store["hidden_states"].append(tuple(h[:, rows] for h in outputs.hidden_states))

    def fields(self) -> dict:
        return {name: tuple(self.store[name]) if on else None for name, on in self.want.items()}
