"""pydecode as SGLang's sampling backend, selected with ``--sampling-backend pydecode``.

:func:`register` (the ``sglang.srt.plugins`` entry point, which SGLang runs in each of its processes before it parses
its arguments) registers :class:`PydecodeSampler` through SGLang's ``register_sampler_backend``. Registering only
adds a choice: SGLang's own sampler stays in use unless the server is started with ``--sampling-backend pydecode``.

SGLang builds a fresh ``SamplingBatchInfo`` for every step (per-row tensors, rows reordered as requests come and go,
no admission or removal events) and applies penalties, logit bias and grammar masks to the logits before its sampler
runs. The draw is therefore stateless per call, so this backend draws with pydecode's sampling op
(:func:`~pydecode.ops.top_k_top_p_sample`, unchecked: SGLang validates each request's parameters at admission) on the
batch's rows, rather than with the slot-keeping :class:`pydecode.Sampler`.

Custom logit processors run first, as in SGLang's ``Sampler``. Greedy rows (SGLang marks them ``top_k == 1``) take
the first argmax (temperature 0). Several filters apply in pydecode's order (top-p on the mass top-k leaves), where
SGLang's top-p counts the whole distribution; one filter alone gives SGLang's distribution. Seeded rows
(``sampling_seed``, present under SGLang's deterministic inference) draw from the counter-based stream of
``(seed, position)``, so a request's tokens do not depend on the other rows of the batch. Logprobs follow SGLang's
contract (``log_softmax(logits / temperature)``, or of the raw logits with ``SGLANG_RETURN_ORIGINAL_LOGPROB``) and
are written through SGLang's own logprob processor.
"""
from __future__ import annotations

import torch
from sglang.srt.layers import sampler as sglang_sampler
from sglang.srt.layers.sampler import Sampler, register_sampler_backend

from ...ops.random import position_seeds
from ...ops.sample import sample_unchecked
from ...ops.validation import check_logits

BACKEND = "pydecode"


def register() -> None:
    """Make ``--sampling-backend pydecode`` select :class:`PydecodeSampler`."""
    register_sampler_backend(BACKEND, PydecodeSampler)


class PydecodeSampler(Sampler):
    """SGLang's ``Sampler`` drawing with pydecode: temperature, top-k, top-p, min-p, seeds and logprobs per row."""

    def forward(self, logits_output, sampling_info, return_logprob: bool, top_logprobs_nums, token_ids_logprobs,
                positions: torch.Tensor, *, logprob_logits: torch.Tensor | None = None) -> torch.Tensor:
        if sampling_info.sampling_mask_batch_indices is not None:
            raise ValueError("return_sampling_mask is not supported by --sampling-backend pydecode; "
                             "use one of SGLang's own sampling backends for such requests")
        logits = self._preprocess_logits(logits_output.next_token_logits, sampling_info)
        check_logits(logits)
        temperature, top_k, top_p, min_p = batch_warpers(sampling_info, logits.shape[1])
        tokens = sample_unchecked(logits, temperature, top_k, top_p, min_p,
                                  batch_seeds(sampling_info, positions, logits), 0)
        if return_logprob:
            source = logits if logprob_logits is None else self._preprocess_logits(logprob_logits, sampling_info)
            source = source.float()
            if not sglang_sampler.SGLANG_RETURN_ORIGINAL_LOGPROB:
                source = source / sampling_info.temperatures
            result = self.output_logprob_processor.compute_logprobs(
                torch.log_softmax(source, dim=-1), top_logprobs_nums, token_ids_logprobs, tokens)
            result.write_output_to(logits_output)
        self._sync_token_ids_across_tp(tokens, sampling_info)
        return tokens


def batch_warpers(sampling_info, vocab: int):
    """(temperature, top_k, top_p, min_p) for pydecode from SGLang's per-row tensors; a warper no row uses is passed
    as its "off" scalar (the fast kernels specialise on it)."""
    greedy = sampling_info.top_ks <= 1
    temperature = sampling_info.temperatures.reshape(-1).float().masked_fill(greedy, 0.0)
    top_k = 0
    if sampling_info.need_top_k_sampling:
        top_ks = sampling_info.top_ks.to(torch.int64)
        top_k = top_ks.masked_fill(top_ks >= vocab, 0)
    top_p = sampling_info.top_ps.float() if sampling_info.need_top_p_sampling else 1.0
    min_p = sampling_info.min_ps.float() if sampling_info.need_min_p_sampling else 0.0
    return temperature, top_k, top_p, min_p


def batch_seeds(sampling_info, positions: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(B,) int64 seeds: ``sampling_seed`` keyed by each row's position when SGLang gives one, else fresh draws from
    torch's global generator (unseeded requests)."""
    if sampling_info.sampling_seed is None:
        return torch.randint(-(2 ** 63), 2 ** 63 - 1, (logits.shape[0],), dtype=torch.int64, device=logits.device)
    return position_seeds(sampling_info.sampling_seed.to(logits.device), positions.reshape(-1))
