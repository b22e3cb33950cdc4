"""pydecode's processors that SGLang lacks, as an SGLang ``CustomLogitProcessor``, per request from its
``custom_params`` under pydecode's parameter names (:mod:`pydecode.integrations.request_args`)::

    # server started with --enable-custom-logit-processor
    {"text": "...", "custom_logit_processor": PydecodeLogitProcessor.to_str(),
     "sampling_params": {"temperature": 0.8, "custom_params": {"no_repeat_ngram_size": 2, "typical_p": 0.9}}}

SGLang runs custom processors on the raw logits of the rows that use them, before its penalties and temperature. The
bans and ``sequence_bias`` (:class:`~pydecode.integrations.batch_bans.BatchBans`, all rows at once) read each
request's prompt and output ids; the warpers (dynamic temperature, ``top_h``, ``typical_p``, ``epsilon_cutoff``,
``eta_cutoff``) run on sampling rows on ``logits / t`` and hand back ``t`` times the result, so that SGLang's own
division by ``t`` gives pydecode's order. Bad arguments raise ValueError naming the field.
"""
from __future__ import annotations

import torch
from sglang.srt.sampling.custom_logit_processor import CustomLogitProcessor

from ..batch_bans import BatchBans
from ..processors import GREEDY_BELOW, apply_warpers
from ..request_args import parse_request_args

_REQUEST = "__req__"  # SGLang's entry holding the request (prompt ids, output ids, sampling params)


class PydecodeLogitProcessor(CustomLogitProcessor):
    """``no_repeat_ngram_size``, ``bad_words_ids``, ``sequence_bias`` and pydecode's warpers from ``custom_params``."""

    def __call__(self, logits: torch.Tensor, custom_param_list=None) -> torch.Tensor:
        rows = []
        for row, params in enumerate(custom_param_list or ()):
            params = dict(params or {})
            request = params.pop(_REQUEST, None)
            args = parse_request_args(params)
            if request is not None and (args.has_bans or args.has_warpers):
                rows.append((row, args, request))
        banning = [(row, args, request) for row, args, request in rows if args.has_bans]
        if banning:
            logits = self._bans(logits, banning)
        warping = [(row, args, request.sampling_params.temperature) for row, args, request in rows
                   if args.has_warpers and request.sampling_params.temperature >= GREEDY_BELOW]
        if warping:
            index = torch.tensor([row for row, _, _ in warping], device=logits.device)
            t = torch.tensor([temperature for _, _, temperature in warping], device=logits.device)[:, None]
            scores = apply_warpers(logits.index_select(0, index).float() / t, [args for _, args, _ in warping],
                                   [temperature for _, _, temperature in warping])
            logits = logits.index_copy(0, index, (scores * t).to(logits.dtype))
        return logits

    @staticmethod
    def _bans(logits: torch.Tensor, rows) -> torch.Tensor:
        histories = [[*request.origin_input_ids, *request.output_ids] for _, _, request in rows]
        bans = BatchBans(len(rows), logits.shape[1], logits.device)
        for slot, (_, args, _) in enumerate(rows):
            bans.add(slot, args)
        width = max(1, max(len(h) for h in histories))
        history = torch.zeros(len(rows), width, dtype=torch.int64)
        for slot, tokens in enumerate(histories):
            history[slot, :len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        device = logits.device
        index = torch.tensor([row for row, _, _ in rows], device=device)
        scores = bans.apply(logits.index_select(0, index).float(), torch.arange(len(rows), device=device),
                            history.to(device), torch.tensor([len(h) for h in histories], device=device))
        return logits.index_copy(0, index, scores.to(logits.dtype))
