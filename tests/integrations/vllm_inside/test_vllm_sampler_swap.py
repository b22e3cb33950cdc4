"""The sampler swap against vLLM's real v1 classes with a stand-in batch (no model): the batch state follows
``BatchUpdate`` onto ``pydecode.Sampler`` slots, and ``PydecodeVllmSampler`` samples each row as a lone
``pydecode.Sampler`` holding that request would. Runs in the vLLM side venv; skipped elsewhere."""
from types import SimpleNamespace

import pytest
import torch

vllm = pytest.importorskip("vllm", reason="runs in the vLLM side venv (tests/integrations/setup_vllm.sh)")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessors, MoveDirectionality  # noqa: E402
from vllm.v1.sample.metadata import SamplingMetadata  # noqa: E402

import pydecode  # noqa: E402
from pydecode.integrations.vllm.batch_slots import PydecodeSamplerState, pydecode_params  # noqa: E402
from pydecode.integrations.vllm.sampler import PydecodeVllmSampler  # noqa: E402

VOCAB = 50
CONFIG = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: VOCAB),
                         scheduler_config=SimpleNamespace(max_num_seqs=4))
# (params, prompt, output so far); pydecode's bans in extra_args stay with PydecodeBansProcessor, not the sampler
REQUESTS = {
    "a": (SamplingParams(temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.3, seed=7,
                         extra_args={"no_repeat_ngram_size": 2, "typical_p": 0.9}), [1, 2, 3, 1], [2]),
    "b": (SamplingParams(temperature=0.0, logit_bias={9: 4.0}, min_tokens=3, stop_token_ids=[4]), [5, 6], []),
    "c": (SamplingParams(temperature=1.2, min_p=0.05, frequency_penalty=0.5, seed=11), [7], [8, 8]),
}


def test_vllm_params_become_pydecode_params():
    params = pydecode_params(REQUESTS["b"][0])
    assert params.temperature == 0.0 and not params.sampling and params.sequence_bias == (((9,), 4.0),)
    assert params.min_new_tokens == 3 and params.eos_token_id == (4,)
    params = pydecode_params(REQUESTS["a"][0])
    assert (params.top_k, params.top_p, params.seed, params.no_repeat_ngram_size) == (20, 0.9, 7, 0)
    assert params.typical_p == 0.9 and params.repetition_penalty == 1.3
    with pytest.raises(ValueError, match="typical_p"):
        PydecodeSamplerState.validate_params(SamplingParams(extra_args={"typical_p": 2.0}))


def _metadata(state, rows: int, num_logprobs=None):
    return SamplingMetadata(
        temperature=None, all_greedy=False, all_random=False, top_p=None, top_k=None, generators={},
        max_num_logprobs=num_logprobs, no_penalties=True, prompt_token_ids=None,
        frequency_penalties=torch.zeros(rows), presence_penalties=torch.zeros(rows),
        repetition_penalties=torch.ones(rows), output_token_ids=[], allowed_token_ids_mask=None,
        bad_words_token_ids={}, logitsprocs=LogitsProcessors([state]))


def _alone(name: str, logits_row: torch.Tensor, output: list[int]) -> int:
    """The token a lone pydecode.Sampler holding request ``name`` with ``output`` generated draws from
    ``logits_row``."""
    params, prompt, _ = REQUESTS[name]
    sampler = pydecode.Sampler(1, VOCAB, "cpu")
    sampler.add_request(0, pydecode_params(params), prompt)
    if output:
        sampler.append([0] * len(output), torch.tensor(output))
    return int(sampler.sample(logits_row[None], [0]).token_ids[0])


def test_rows_follow_the_batch_updates_and_sample_as_alone():
    state, swap = PydecodeSamplerState(CONFIG, torch.device("cpu")), PydecodeVllmSampler()
    live = {name: list(output) for name, (_, _, output) in REQUESTS.items()}
    added = [(row, REQUESTS[name][0], REQUESTS[name][1], live[name]) for row, name in enumerate("abc")]
    state.update_state(BatchUpdate(batch_size=3, removed=[], added=added, moved=[]))
    state.update_state(BatchUpdate(batch_size=3, removed=[], added=[], moved=[(0, 2, MoveDirectionality.SWAP)]))
    logits = torch.randn(3, VOCAB + 6, generator=torch.Generator().manual_seed(0)) * 3  # a padded LM head
    out = swap(logits.clone(), _metadata(state, 3, num_logprobs=2))
    order = "cba"  # after the swap
    want = [_alone(name, logits[row], live[name]) for row, name in enumerate(order)]
    assert out.sampled_token_ids[:, 0].tolist() == want
    assert out.sampled_token_ids[1, 0] != 4  # min_tokens keeps b's stop token away
    raw = logits[:, :VOCAB].log_softmax(-1)
    lp = out.logprobs_tensors
    ids, values, ranks = lp.logprob_token_ids, lp.logprobs, lp.selected_token_ranks
    torch.testing.assert_close(values, raw.gather(1, ids.long()))
    assert ids[:, 1].tolist() == raw.argmax(-1).tolist() and (ranks >= 1).all()
    # vLLM appends the accepted tokens to its live lists; removing "c" (row 0) moves "a" from row 2 to row 0
    for row, name in enumerate(order):
        live[name].append(want[row])
    state.update_state(BatchUpdate(batch_size=2, removed=[0], added=[],
                                   moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    out = swap(logits[:2].clone(), _metadata(state, 2))
    want = [_alone("a", logits[0], live["a"]), _alone("b", logits[1], live["b"])]
    assert out.sampled_token_ids[:, 0].tolist() == want
    assert len(state.free) == 2 and set(state.slot_of_row) == {0, 1}


def test_without_the_batch_state_vllms_sampler_samples():
    swap = PydecodeVllmSampler()
    metadata = _metadata(SimpleNamespace(is_argmax_invariant=lambda: True), 2)
    metadata.all_greedy, metadata.temperature = True, torch.zeros(2)
    logits = torch.randn(2, VOCAB)
    assert swap(logits, metadata).sampled_token_ids[:, 0].tolist() == logits.argmax(-1).tolist()
