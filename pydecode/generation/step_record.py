"""What ``return_dict_in_generate`` asks of the one-token-per-step strategies (sampling, contrastive search, DoLa),
collected step by step."""
from __future__ import annotations

import torch

from ..ops.logprobs import token_logprobs_unchecked
from .model.compat import with_cache
from .output import GenerateOutput, requested_logprobs


class StepRecorder:
    """Collects what ``return_dict_in_generate`` asks for, step by step."""

    def __init__(self, config):
        on = bool(config.return_dict_in_generate)
        self.scores = on and bool(config.output_scores)
        self.logits = on and bool(config.output_logits)
        self.attentions = on and bool(config.output_attentions)
        self.hidden_states = on and bool(config.output_hidden_states)
        self.top_n, self.logprobs = requested_logprobs(config)
        self.processed_logprobs = self.logprobs
        self.keeps_raw = self.logits or self.logprobs
        self.per_step = self.scores or self.keeps_raw or self.attentions or self.hidden_states
        self.store = {k: [] for k in ("scores", "logits", "attentions", "hidden_states", "logprobs", "processed",
                                      "top_values", "top_ids")}

    def add(self, outputs, logits, scores, processed, tokens, backend, drawn=None, live=None) -> None:
        """Record one step. ``drawn``: the sampler's ``(raw logprob or None, processed logprob)`` of the tokens, when
        it computed them (else they come from ``logits`` and ``processed``); ``live``: (B,) bool, the rows still
        unfinished before this token (the others' logprobs are recorded as 0)."""
        if self.scores:
            self.store["scores"].append(processed)
        if self.logits:
            self.store["logits"].append(logits)
        if self.attentions:
            self.store["attentions"].append(outputs.attentions)
        if self.hidden_states:
            self.store["hidden_states"].append(outputs.hidden_states)
        if self.logprobs:
            chosen, processed_logprob = drawn if drawn is not None else (None, None)
            if chosen is None or self.top_n:
                chosen, top_values, top_ids = token_logprobs_unchecked(logits, tokens, self.top_n, backend)
                self.store["top_values"].append(top_values)
                self.store["top_ids"].append(top_ids)
            if processed_logprob is None:
                processed_logprob = token_logprobs_unchecked(processed, tokens, 0, backend)[0]
            if live is not None:
                chosen, processed_logprob = (torch.where(live, x, 0.0) for x in (chosen, processed_logprob))
                if self.top_n:
                    self.store["top_values"][-1] = self.store["top_values"][-1].masked_fill(~live[:, None], 0.0)
                    self.store["top_ids"][-1] = self.store["top_ids"][-1].masked_fill(~live[:, None], 0)
            self.store["logprobs"].append(chosen)
            self.store["processed"].append(processed_logprob)

    def finish(self, sequences, cache, host_syncs) -> GenerateOutput:
        s = self.store
        stack = (lambda xs: torch.stack(xs, dim=1)) if self.logprobs else (lambda xs: None)
        return GenerateOutput(
            sequences=sequences,
            scores=tuple(s["scores"]) if self.scores else None,
            logits=tuple(s["logits"]) if self.logits else None,
            attentions=tuple(s["attentions"]) if self.attentions else None,
            hidden_states=tuple(s["hidden_states"]) if self.hidden_states else None,
            **with_cache(cache),
            logprobs=stack(s["logprobs"]),
            processed_logprobs=stack(s["processed"]),
            top_logprobs=stack(s["top_values"]) if self.top_n else None,
            top_logprob_ids=stack(s["top_ids"]) if self.top_n else None,
            host_syncs=host_syncs,
        )
