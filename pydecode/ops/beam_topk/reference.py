"""Pure-PyTorch reference of the beam top-k op: the oracle of every backend.

For each batch item b the candidates are the ``num_beams * V`` pairs (beam j, token t) of rows
``b * num_beams + j``; a candidate's score is ``log_softmax(logits[row])[t] + beam_scores[row]`` (or
``logits[row, t] + beam_scores[row]`` with ``log_softmax=False``). The op returns the ``k`` best candidates in
descending score; ties go to the smaller flat index ``j * V + t``. NaN scores count as ``-inf`` (so does every
candidate of a row whose logits are all ``-inf``), and ``-0.0`` counts as ``0.0``.

The tie rule, followed by every backend: the candidates are each row's ``k`` largest logits (ties to the smaller
token), so where adding the beam score rounds different logits to one float32 score (a beam score of -1e9 absorbs
them), the row's larger logits win, not its smaller token ids.
"""
from __future__ import annotations

import torch


def beam_scores_of(logits: torch.Tensor, beam_scores: torch.Tensor, log_softmax: bool) -> torch.Tensor:
    """(rows, V) float32 candidate scores, NaN replaced by ``-inf``."""
    x = logits.to(torch.float32)
    x = x.masked_fill(torch.isnan(x), float("-inf"))
    if log_softmax:
        x = torch.log_softmax(x, dim=-1)
    total = x + beam_scores.to(torch.float32)[:, None]
    return total.masked_fill(torch.isnan(total), float("-inf")) + 0.0


def beam_topk(logits: torch.Tensor, beam_scores: torch.Tensor, num_beams: int, k: int, log_softmax: bool = True):
    """Top ``k`` (score, token, beam) candidates of each batch item.

    Parameters
    ----------
    logits : (B * num_beams, V) float tensor
    beam_scores : (B * num_beams,) float32 running score of each beam
    num_beams : int, beams per batch item
    k : int in [1, num_beams * V]
    log_softmax : bool, normalise each row with log-softmax before adding its beam score

    Returns
    -------
    scores (B, k) float32, tokens (B, k) int64, beams (B, k) int64 (the source beam in [0, num_beams))
    """
    rows, vocab = logits.shape
    per_row = min(k, vocab)
    raw = logits.to(torch.float32)
    raw = raw.masked_fill(torch.isnan(raw), float("-inf")) + 0.0
    # each row's candidates: its per_row largest logits, equal ones in token order (stable sorts; the oracle may
    # afford them)
    tokens = torch.sort(raw, dim=1, descending=True, stable=True).indices[:, :per_row]
    scores = beam_scores_of(logits, beam_scores, log_softmax).gather(1, tokens)
    flat = (torch.arange(rows, device=logits.device)[:, None] % num_beams) * vocab + tokens
    batch, width = rows // num_beams, num_beams * per_row  # explicit: -1 is ambiguous on an empty batch
    flat, scores = flat.reshape(batch, width), scores.reshape(batch, width)
    by_index = torch.sort(flat, dim=1, stable=True)  # then equal scores stay in flat-index order
    scores = scores.gather(1, by_index.indices)
    values, order = torch.sort(scores, dim=1, descending=True, stable=True)
    chosen = by_index.values.gather(1, order[:, :k])
    return values[:, :k].contiguous(), chosen % vocab, chosen // vocab
