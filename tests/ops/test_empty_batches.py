"""Every op on every backend with a batch of zero rows: empty results of the right shapes, no launch error (a CUDA
grid of zero blocks is one)."""
import torch

from pydecode.ops import apply_penalties_, record_tokens_, token_logprobs, top_k_top_p_sample
from pydecode.ops.beam_topk import beam_topk
from pydecode.ops.degeneration import degeneration_score
from pydecode.ops.verify import verify

from tests.support.devices import on_device

NO_SEEDS = torch.empty(0, dtype=torch.int64)


def test_sampling_ops(backend):
    logits = torch.empty(0, 50)
    assert on_device(top_k_top_p_sample, logits, seeds=NO_SEEDS, temperature=0.8, top_k=5, top_p=0.9,
                     backend=backend).shape == (0,)
    chosen, values, ids = on_device(token_logprobs, logits, NO_SEEDS, 3, backend=backend)
    assert chosen.shape == (0,) and values.shape == ids.shape == (0, 3)
    counts = torch.zeros(0, 50, dtype=torch.int32)
    assert on_device(apply_penalties_, logits, counts, None, 1.2, 0.5, 0.5, backend=backend).shape == (0, 50)
    assert on_device(record_tokens_, counts, NO_SEEDS, backend=backend).shape == (0, 50)


def test_beam_topk(backend):
    scores, tokens, beams = on_device(beam_topk, torch.empty(0, 50), torch.empty(0), 4, 8, backend=backend)
    assert scores.shape == tokens.shape == beams.shape == (0, 8)


def test_verify(backend):
    accepted, following = on_device(verify, torch.empty(0, 2, dtype=torch.int64), None, torch.empty(0, 3, 50),
                                    NO_SEEDS, 1.0, seeds=NO_SEEDS, backend=backend)
    assert accepted.shape == following.shape == (0,)


def test_degeneration_score(backend):
    best, scores = on_device(degeneration_score, torch.empty(0, 4, 16), torch.empty(0, 7, 16), None,
                             torch.empty(0, 4), 0.6, backend=backend)
    assert scores.shape == (0, 4) and best.shape == (0,)
