"""pydecode's warpers for engine requests, engine-free: the engine adapters (vLLM, SGLang) feed them each step's
logits rows. :func:`apply_warpers`: dynamic temperature, ``top_h``, ``typical_p``, ``epsilon_cutoff``,
``eta_cutoff`` (pydecode's order) on logits already divided by each row's temperature, with pydecode's torch
implementations (:mod:`pydecode.ops.sample`). A request's bans and biases run in :mod:`.batch_bans`.
"""
from __future__ import annotations

import torch

from ..ops.sample import dynamic_temperature, epsilon_filter, eta_filter, top_h_filter, typical_filter
from .request_args import RequestArgs

GREEDY_BELOW = 1e-5  # the temperature below which vLLM and SGLang decode greedily


def apply_warpers(scores: torch.Tensor, args: list[RequestArgs], temperatures: list[float]) -> torch.Tensor:
    """The warpers of ``args`` (one per row) on float32 ``scores`` (R, V), each row already divided by its
    (sampling, > 0) base temperature in ``temperatures``; returns new scores.

    Dynamic temperature rescales a row by ``t / t_dyn``, ``t_dyn`` computed from the undivided logits' entropy.
    """
    def per_row(values):
        return torch.tensor(values, dtype=torch.float32, device=scores.device)

    if any(a.dynatemp_range > 0 for a in args):
        base = per_row(temperatures)
        dynamic = dynamic_temperature(scores * base[:, None], base, per_row([a.dynatemp_range for a in args]),
                                      per_row([a.dynatemp_exponent for a in args]))
        scores = scores * (base / dynamic.clamp(min=GREEDY_BELOW))[:, None]
    scores = top_h_filter(scores, per_row([a.top_h for a in args]))
    scores = typical_filter(scores, per_row([a.typical_p for a in args]))
    scores = epsilon_filter(scores, per_row([a.epsilon_cutoff for a in args]))
    return eta_filter(scores, per_row([a.eta_cutoff for a in args]))
