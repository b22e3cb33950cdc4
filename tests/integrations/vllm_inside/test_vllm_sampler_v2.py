"""The GPU model runner v2 adapter against vLLM's real v2 ``Sampler`` class, with a stand-in batch: the runner's
engine does not run on CPU, and its request-state buffers want pinned memory, so they get vLLM's own non-pinned
fallback buffers here. Runs in the vLLM side venv; skipped elsewhere."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm", reason="runs in the vLLM side venv (tests/integrations/setup_vllm.sh)")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.worker.gpu import buffer_utils  # noqa: E402
from vllm.v1.worker.gpu.states import RequestState  # noqa: E402

import pydecode  # noqa: E402
from pydecode.integrations.request_args import parse_request_args  # noqa: E402
from pydecode.integrations.vllm.logits_processors import PydecodeBansProcessor  # noqa: E402
from pydecode.integrations.vllm.sampler_v2 import PydecodeV2Sampler, draw_params  # noqa: E402

from tests.support.request_bans import RequestBans  # noqa: E402

VOCAB, SLOTS = 50, 4
BANS = {"no_repeat_ngram_size": 2, "bad_words_ids": "[[3, 4]]"}
REQUESTS = {  # slot: params (no vLLM penalties or logit bias: their kernels are Triton-only)
    3: SamplingParams(temperature=0.9, top_k=10, top_p=0.8, seed=5),
    0: SamplingParams(temperature=0.0, extra_args=BANS),
    2: SamplingParams(temperature=1.3, min_p=0.1, seed=9, extra_args=BANS),
}


@pytest.fixture
def sampler(monkeypatch):
    monkeypatch.setattr(buffer_utils, "UvaBuffer", buffer_utils.NonUvaBuffer)
    states = RequestState(max_num_reqs=SLOTS, max_model_len=32, max_num_batched_tokens=64, num_speculative_steps=0,
                          vocab_size=VOCAB, device=torch.device("cpu"))
    config = SimpleNamespace(reasoning_config=None, model_config=SimpleNamespace(get_vocab_size=lambda: VOCAB))
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcRequestState

    bans = PydecodeBansProcessor(config, LogitsProcRequestState.from_request_state(states))
    sampler = PydecodeV2Sampler(config, SLOTS, VOCAB, torch.device("cpu"), states,
                                custom_logits_processors=[bans])
    for slot, params in REQUESTS.items():
        sampler.add_request(slot, params)
    sampler.apply_staged_writes()
    return sampler, states


def test_rows_draw_as_a_lone_pydecode_sampler(sampler):
    sampler, states = sampler
    histories = {3: [1, 2, 3], 0: [3, 4, 3, 4, 3], 2: [7, 8, 7]}
    for slot, tokens in histories.items():
        states.all_token_ids.gpu[slot, :len(tokens)] = torch.tensor(tokens)
    slots = [2, 3, 0]
    pos = torch.tensor([len(histories[s]) - 1 for s in slots])
    inputs = torch.tensor([histories[s][-1] for s in slots])
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(1)) * 3
    index = torch.tensor(slots)
    tokens, processed = sampler.sample(logits, index, index, np.array(slots), pos, inputs,
                                       torch.zeros(3, dtype=torch.int64), (pos + 1).numpy())
    for row, slot in enumerate(slots):
        want_logits = logits[row:row + 1]
        if REQUESTS[slot].extra_args:
            want_logits = RequestBans(parse_request_args(BANS), VOCAB, "cpu").apply(
                want_logits, torch.tensor([histories[slot]]))
        alone = pydecode.Sampler(1, VOCAB, "cpu")
        alone.add_request(0, draw_params(REQUESTS[slot]), [])
        assert int(tokens[row]) == int(alone.sample(want_logits, [0], positions=pos[row:row + 1]).token_ids[0])
        torch.testing.assert_close(processed[row], want_logits[0])
    assert processed[2, 4] == float("-inf") and logits[2, 4] != float("-inf")  # after "3": "3 4" seen, a bad word
