"""pydecode's vLLM processors against vLLM's real interfaces, with small stand-in batches (no model). Runs in the
vLLM side venv (test_vllm.py starts it there); skipped elsewhere.

- both model runners load the ``vllm.logits_processors`` entry points (the v2 runner refuses v1-only classes);
- the v1 path follows a ``BatchUpdate`` (added, swapped, moved, removed rows);
- the GPU model runner v2 path (``add_request`` per slot, ``apply(logits, LogitsContext)``, history from the
  runner's ``all_token_ids``) gives what the engine-free processors give.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm", reason="runs in the vLLM side venv (tests/integrations/setup_vllm.sh)")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor.interface import (  # noqa: E402
    LogitsContext,
    LogitsProcRequestState,
)

from pydecode.integrations.processors import apply_warpers  # noqa: E402
from pydecode.integrations.request_args import parse_request_args  # noqa: E402
from pydecode.integrations.vllm.logits_processors import (  # noqa: E402
    PydecodeBansProcessor,
    PydecodeWarpersProcessor,
)

from tests.support.request_bans import RequestBans  # noqa: E402

VOCAB = 40
CONFIG = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: VOCAB),
                         scheduler_config=SimpleNamespace(max_num_seqs=4))
BANS = {"no_repeat_ngram_size": 2, "bad_words_ids": "[[5], [1, 2, 3]]", "sequence_bias": [[[7], 3.0]]}
WARPS = {"typical_p": 0.6, "epsilon_cutoff": 0.02, "dynatemp_range": 0.3}


def _logits(rows: int) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(rows)) * 3


def test_both_runners_load_the_entry_points():
    from vllm.v1.sample.logits_processor import _load_logitsprocs_plugins
    from vllm.v1.worker.gpu.sample.logits_processor.loader import _load_v2_logitsprocs_plugins

    ours = {PydecodeBansProcessor, PydecodeWarpersProcessor}
    assert ours <= set(_load_logitsprocs_plugins())
    assert ours <= set(_load_v2_logitsprocs_plugins())


def test_v1_state_follows_the_batch_updates():
    bans = PydecodeBansProcessor(CONFIG, torch.device("cpu"), False)
    histories = {"a": ([1, 2, 1], [2, 3]), "b": ([4, 4, 6], [1, 2])}
    added = [(0, SamplingParams(extra_args=BANS), *histories["a"]), (1, SamplingParams(), [9], []),
             (2, SamplingParams(extra_args={"bad_words_ids": "[[6, 1, 2, 8]]"}), *histories["b"])]
    bans.update_state(BatchUpdate(batch_size=3, removed=[], added=added, moved=[]))
    bans.update_state(BatchUpdate(batch_size=3, removed=[], added=[], moved=[(0, 2, MoveDirectionality.SWAP)]))
    logits = _logits(3)
    got = bans.apply(logits.clone())
    request_a = RequestBans(parse_request_args(BANS), VOCAB, "cpu")
    history_a = torch.tensor([[1, 2, 1, 2, 3]])
    assert torch.equal(got[2], request_a.apply(logits[2:3], history_a)[0]) and torch.equal(got[1], logits[1])
    assert got[0, 8] == float("-inf") and torch.isinf(got[0]).sum() == 1  # "6 1 2" then 8 is the bad word
    bans.update_state(BatchUpdate(batch_size=2, removed=[0], added=[],
                                  moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    assert set(bans.rows) == {0}
    assert torch.equal(bans.apply(logits.clone())[0], request_a.apply(logits[:1], history_a)[0])
    histories["a"][1].append(1)  # vLLM appends the next token to its live list: the bans see it the next step
    want = request_a.apply(logits[:1], torch.tensor([[1, 2, 1, 2, 3, 1]]))[0]
    assert torch.equal(bans.apply(logits.clone())[0], want) and want[2] == float("-inf")  # "1 2" seen: no 2


def _v2_batch(slots: list[int], histories: dict[int, list[int]]):
    all_token_ids = torch.zeros(4, 16, dtype=torch.int64)
    for slot, tokens in histories.items():
        all_token_ids[slot, :len(tokens)] = torch.tensor(tokens)
    lengths = torch.tensor([len(histories[s]) for s in slots])
    stub = SimpleNamespace(gpu=torch.zeros(4, dtype=torch.int32))
    states = LogitsProcRequestState(device=torch.device("cpu"), max_num_reqs=4, vocab_size=VOCAB,
                                    all_token_ids=SimpleNamespace(gpu=all_token_ids), prompt_len=stub,
                                    prefill_len=stub, total_len=stub)
    index = torch.tensor(slots)
    ctx = LogitsContext(expanded_idx_mapping=index, idx_mapping=index, idx_mapping_np=np.array(slots),
                        expanded_local_pos=torch.zeros(len(slots), dtype=torch.int64),
                        input_ids=torch.tensor([histories[s][-1] for s in slots]), pos=lengths - 1,
                        seq_lens_upper_bound_np=lengths.numpy())
    return states, ctx


def test_v2_processors_on_a_stand_in_batch():
    histories = {0: [3, 4, 3, 9], 2: [1, 2, 5, 1], 3: [8, 8]}
    states, ctx = _v2_batch([2, 3, 0], histories)
    bans, warpers = PydecodeBansProcessor(CONFIG, states), PydecodeWarpersProcessor(CONFIG, states)
    assert bans.add_request(2, SamplingParams(extra_args=BANS))
    assert not bans.add_request(3, SamplingParams(extra_args=WARPS))
    assert warpers.add_request(0, SamplingParams(temperature=0.8, extra_args=WARPS))
    assert not warpers.add_request(2, SamplingParams(temperature=0.0, extra_args=WARPS))  # greedy: no warpers
    logits = _logits(3)
    got = warpers.apply(bans.apply(logits.clone(), ctx), ctx)
    want_bans = RequestBans(parse_request_args(BANS), VOCAB, "cpu").apply(logits[:1], torch.tensor([histories[2]]))
    assert torch.equal(got[0], want_bans[0]) and torch.equal(got[1], logits[1])
    want_warped = apply_warpers(logits[2:3] / 0.8, [parse_request_args(WARPS)], [0.8])
    torch.testing.assert_close(got[2:3] / 0.8, want_warped)
    assert torch.isinf(got[2]).any() and not torch.isinf(logits[2]).any()
