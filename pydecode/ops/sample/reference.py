"""Pure-PyTorch reference of the sampling pipeline: temperature -> top-H -> top-k -> top-p -> min-p -> typical ->
epsilon -> eta -> draw (top-H, epsilon and eta: :mod:`.cutoffs`, off unless asked for).

Each filter has the semantics of the transformers warper of the same name (sequential: each sees the output of the
previous one, masked entries are ``-inf``; top-p keeps the smallest set of most probable tokens whose mass reaches
``top_p``; min-p keeps ``p >= min_p * p_max``). Parameters are per row: a Python
scalar for every row, or a tensor of shape (B,). A row with ``temperature == 0`` is greedy: its warpers are skipped
and the draw is the argmax. NaN logits count as ``-inf``; a row with no finite logit draws token 0.

The tie rule, followed by every backend: a cut keeps or drops a group of equal values whole. Top-k keeps every
entry ``>=`` the k-th largest value (so more than k entries when ties straddle the k-th place); top-p keeps every
entry ``>=`` its pivot, the smallest value of the kept set, which depends only on the values, not on the order a
sort puts equal values in; min-p decides on the value alone. Among equal noisy values the draw takes the lowest id.
"""
from __future__ import annotations

import torch

from ..random import gumbel_noise
from ..rows import per_row, sanitize
from .cutoffs import epsilon_filter, eta_filter, top_h_filter


def apply_temperature(logits: torch.Tensor, temperature) -> torch.Tensor:
    """Divide each sampling row by its temperature; greedy rows (temperature 0) are left as they are."""
    t = per_row(temperature, logits.shape[0], logits.device, torch.float32)
    return torch.where(t > 0, logits / torch.where(t > 0, t, 1.0), logits)


def top_k_filter(logits: torch.Tensor, top_k) -> torch.Tensor:
    """Keep the entries >= each row's k-th largest value; ``top_k <= 0`` or ``>= V`` keeps everything."""
    batch, vocab = logits.shape
    k = per_row(top_k, batch, logits.device, torch.int64)
    active = (k > 0) & (k < vocab)
    if torch.compiler.is_compiling():  # no host read inside a graph: a bound the arguments give (same result)
        kmax = vocab if isinstance(top_k, torch.Tensor) else min(max(int(top_k), 1), vocab)
    elif not bool(active.any()):
        return logits
    else:
        kmax = int(torch.where(active, k, 1).max())
    top_values = logits.topk(kmax, dim=-1).values
    kth = top_values.gather(1, (torch.where(active, k, 1) - 1).clamp(max=kmax - 1))
    remove = active & (logits < kth)
    return logits.masked_fill(remove, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p) -> torch.Tensor:
    """Nucleus filter: drop the least probable tokens whose cumulative mass is <= ``1 - top_p``."""
    p = per_row(top_p, logits.shape[0], logits.device, torch.float32)
    active = p < 1.0
    if not torch.compiler.is_compiling() and not bool(active.any()):  # the shortcut (inactive rows stay anyway)
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    sorted_remove = cumulative <= (1 - p)
    sorted_remove[:, -1] = False
    # the pivot: the smallest kept value; everything equal to it is kept too, whatever order the sort gave ties
    pivot = sorted_logits.gather(1, sorted_remove.sum(dim=1, keepdim=True))
    return logits.masked_fill(active & (logits < pivot), float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p) -> torch.Tensor:
    """Drop tokens whose probability is below ``min_p`` times the row's top probability."""
    m = per_row(min_p, logits.shape[0], logits.device, torch.float32)
    if not torch.compiler.is_compiling() and not bool((m > 0).any()):  # the shortcut (m = 0 removes nothing)
        return logits
    probs = logits.softmax(dim=-1)
    remove = probs < m * probs.amax(dim=-1, keepdim=True)
    remove.scatter_(1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(remove, float("-inf"))


def typical_filter(logits: torch.Tensor, typical_p) -> torch.Tensor:
    """Locally typical sampling (Meister et al.): keep the tokens closest to the entropy until ``typical_p`` mass."""
    mass = per_row(typical_p, logits.shape[0], logits.device, torch.float32)
    active = mass < 1.0
    if not torch.compiler.is_compiling() and not bool(active.any()):  # the shortcut (inactive rows stay anyway)
        return logits
    log_probs = logits.log_softmax(dim=-1)
    entropy = -(log_probs * log_probs.exp()).nansum(-1, keepdim=True)
    shifted = (-log_probs - entropy).abs()
    sorted_shifted, sorted_idx = torch.sort(shifted, descending=False)
    cumulative = logits.gather(-1, sorted_idx).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=1, keepdim=True).clamp_(max=logits.shape[-1] - 1)
    sorted_remove = sorted_shifted > sorted_shifted.gather(1, last)
    sorted_remove[:, 0] = False
    remove = sorted_remove.scatter(1, sorted_idx, sorted_remove) & active
    return logits.masked_fill(remove, float("-inf"))


def process_logits(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, *, top_h=0.0,
                   epsilon=0.0, eta=0.0) -> torch.Tensor:
    """float32 processed logits: temperature, then the top-H, top-k, top-p, min-p, typical, epsilon and eta masks
    (``-inf`` = removed).

    Greedy rows (temperature 0) come back as the sanitized input: their draw is the argmax either way.
    """
    logits = sanitize(logits)
    if not isinstance(temperature, torch.Tensor) and temperature <= 0:
        return logits
    batch = logits.shape[0]
    sampling = per_row(temperature, batch, logits.device, torch.float32) > 0
    out = apply_temperature(logits, temperature)
    out = top_h_filter(out, top_h)
    out = top_k_filter(out, top_k)
    out = top_p_filter(out, top_p)
    out = min_p_filter(out, min_p)
    out = typical_filter(out, typical_p)
    out = epsilon_filter(out, epsilon)
    out = eta_filter(out, eta)
    return torch.where(sampling, out, logits)


def sample_from_processed(processed: torch.Tensor, seeds: torch.Tensor, step: int, temperature=1.0) -> torch.Tensor:
    """Gumbel-max draw from ``softmax(processed)`` per row; greedy rows (temperature 0) take the argmax.

    ``seeds`` (B,) int64 and ``step`` select the counter-based stream (see :mod:`.random`). Returns (B,) int64.
    """
    processed = sanitize(processed)
    if not isinstance(temperature, torch.Tensor) and temperature <= 0:
        return processed.argmax(dim=-1)
    batch, vocab = processed.shape
    greedy = per_row(temperature, batch, processed.device, torch.float32) <= 0
    noisy = processed + gumbel_noise(seeds.to(processed.device), step, vocab)
    return torch.where(greedy, processed, noisy).argmax(dim=-1)


def top_k_top_p_sample(logits, temperature, top_k, top_p, min_p, seeds, step, typical_p=1.0, **cutoffs) -> torch.Tensor:
    """The fused kernels' contract: process the logits and draw one token per row. Returns (B,) int64.

    ``cutoffs``: the keyword-only ``top_h``, ``epsilon`` and ``eta`` of :func:`process_logits`."""
    processed = process_logits(logits, temperature, top_k, top_p, min_p, typical_p, **cutoffs)
    return sample_from_processed(processed, seeds, step, temperature)


def top_k_top_p_sample_logprobs(logits, temperature, top_k, top_p, min_p, seeds, step, typical_p=1.0, **cutoffs):
    """:func:`top_k_top_p_sample` that also reports the drawn token's log-probabilities.

    Returns ``(tokens (B,) int64, logprob (B,) float32, processed_logprob (B,) float32)``: ``log_softmax`` at the
    token of the input logits and of the processed logits it was drawn from (equal on greedy rows). A row with no
    finite logit, or with a ``+inf`` logit, reports NaN.
    """
    processed = process_logits(logits, temperature, top_k, top_p, min_p, typical_p, **cutoffs)
    tokens = sample_from_processed(processed, seeds, step, temperature)
    at = tokens.view(-1, 1)
    logprob = sanitize(logits).log_softmax(dim=-1).gather(1, at).squeeze(1)
    processed_logprob = processed.log_softmax(dim=-1).gather(1, at).squeeze(1)
    return tokens, logprob, processed_logprob
