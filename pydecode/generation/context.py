"""Everything one generate() call has prepared before its strategy runs."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..sampling.params import RowParams
from .logits.pipeline import LogitsPipeline
from .model.runner import ModelRunner
from .stopping import StopConditions


@dataclass(frozen=True)
class DecodeContext:
    """What a strategy's ``run(ctx)`` gets (built by :func:`pydecode.generation.prepare.prepare`).

    ``input_ids`` / ``attention_mask`` are already expanded to ``rows = batch * expand`` (``expand`` is
    ``num_beams`` for the beam family, else ``num_return_sequences``); ``params``, ``pipeline`` and ``runner`` are
    built for those rows. ``max_length`` is the total length limit (prompt included), already written into
    ``config.max_length``. ``eos_ids`` is the call's one form of its eos ids: an int64 tensor (E,) on the prompt's
    device, or None without eos (the tensor ``pipeline`` and ``stops`` were built with; host-side forms are derived
    where needed). ``backend`` is the name resolved once for the call. ``strategy`` names the strategy the config
    asks for; ``runs`` the key of :data:`~pydecode.generation.strategies.RUNS` that decodes the call, ``compiled`` the
    key of :data:`~pydecode.generation.strategies.COMPILED_RUNS` that decodes it under ``compile=`` (None: eager).
    """

    model: torch.nn.Module
    config: object
    params: RowParams
    pipeline: LogitsPipeline
    stops: StopConditions
    runner: ModelRunner
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    batch: int
    expand: int
    max_length: int
    eos_ids: torch.Tensor | None
    pad_id: int | None
    streamer: object
    backend: str
    model_kwargs: dict
    strategy: str
    runs: str
    compiled: str | None = None
