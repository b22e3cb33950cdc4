"""Pure-PyTorch reference of speculative verification (Leviathan et al. 2022, arXiv 2211.17192; Chen et al. 2023,
arXiv 2302.01318): decide how many draft tokens each row accepts and draw the token that follows them.

Per row ``b`` with ``n = num_draft[b]`` draft tokens ``x_j`` (j < n), target distributions ``p_j = softmax(target[j])``
(j <= n) and draft distributions ``q_j = softmax(draft[j])`` (or one-hot at ``x_j`` when no draft logits are given, as
for prompt lookup):

- sampling row (temperature > 0): accept ``x_j`` while ``u_j * q_j(x_j) < p_j(x_j)`` (probability min(1, p/q));
  at the first rejection ``j`` draw from the normalised residual ``max(p_j - q_j, 0)`` (``p_j`` if it has no mass);
  when all ``n`` are accepted draw the bonus token from ``p_n``
- greedy row (temperature <= 0): accept while ``x_j == argmax target[j]``; the next token is the argmax at the first
  mismatch (or at ``n``)

Randomness is the sampler's counter-based stream at ``(seed, step)`` (:mod:`.random`): the draws are Gumbel-max over
the tokens ``0..V-1`` (the bonus draw is exactly the sampler's draw from ``target[n]``), and the acceptance uniforms
``u_j`` are the stream's words at indices ``V + j``, just past the vocabulary. Inputs are processed logits (warpers
applied, ``-inf`` = removed); each row must keep a finite logit.
"""
from __future__ import annotations

import torch

from ..random import TOKEN_SALT, gumbel_noise, mix32, step_keys
from ..rows import per_row, sanitize


def acceptance_uniforms(seeds: torch.Tensor, step: int, vocab: int, k: int) -> torch.Tensor:
    """(B, K) float32 uniforms ``u_j``: the stream's words at token indices ``V + j``."""
    keys = step_keys(seeds, step)
    index = torch.arange(vocab, vocab + k, device=seeds.device, dtype=torch.int64)
    bits = mix32(keys[:, None] ^ mix32(index ^ TOKEN_SALT)[None, :])
    return ((bits >> 9).to(torch.float32) + 0.5) * (2.0**-23)


def verify(draft_tokens: torch.Tensor, draft_logits: torch.Tensor | None, target_logits: torch.Tensor,
           num_draft: torch.Tensor, temperature, seeds: torch.Tensor, step: int):
    """Speculative verification of K draft tokens per row.

    ``draft_tokens`` (B, K) int64; ``draft_logits`` (B, K, V) float32 or None (a deterministic draft);
    ``target_logits`` (B, K + 1, V) float32; ``num_draft`` (B,) int64 in [0, K]: how many of the K are real;
    ``temperature`` a float or (B,) tensor (<= 0: greedy row); ``seeds`` (B,) int64 and ``step`` select the stream.
    Returns ``(accepted (B,) int64 in [0, num_draft], next_tokens (B,) int64)``.
    """
    batch, k = draft_tokens.shape
    vocab = target_logits.shape[-1]
    target = sanitize(target_logits)
    greedy = per_row(temperature, batch, target.device, torch.float32) <= 0  # (B, 1)
    p = target.softmax(dim=-1)
    p_tok = p[:, :k].gather(-1, draft_tokens[..., None]).squeeze(-1)
    if draft_logits is None:
        q = None
        q_tok = torch.ones_like(p_tok)
    else:
        q = sanitize(draft_logits).softmax(dim=-1)
        q_tok = q.gather(-1, draft_tokens[..., None]).squeeze(-1)
    u = acceptance_uniforms(seeds, step, vocab, k)
    ok = torch.where(greedy, target[:, :k].argmax(dim=-1) == draft_tokens, u * q_tok < p_tok)
    ok &= torch.arange(k, device=ok.device) < num_draft[:, None]
    accepted = ok.long().cumprod(dim=-1).sum(dim=-1)

    rows = torch.arange(batch, device=target.device)
    logits_at, p_at = target[rows, accepted], p[rows, accepted]
    rejected = (accepted < num_draft)[:, None]
    if q is None:
        drafted = torch.zeros_like(p_at, dtype=torch.bool)
        drafted[rows, draft_tokens[rows, accepted.clamp(max=k - 1)]] = True
        residual = p_at.masked_fill(drafted, 0.0)
    else:
        residual = (p_at - q[rows, accepted.clamp(max=k - 1)]).clamp(min=0.0)
    residual = torch.where((residual.sum(dim=-1, keepdim=True) > 0), residual, p_at)
    noise = gumbel_noise(seeds, step, vocab)
    drawn = torch.where(rejected, residual.log(), logits_at) + noise
    next_tokens = torch.where(greedy.squeeze(1), logits_at.argmax(dim=-1), drawn.argmax(dim=-1))
    return accepted, next_tokens
