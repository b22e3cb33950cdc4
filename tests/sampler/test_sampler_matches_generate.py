"""An engine-style decode loop driven by hand with pydecode.Sampler (requests
joining and leaving, rows shuffled every step, a slot per return sequence) gives every request the tokens
pydecode.generate gives it alone with the same seed."""
import random

import pytest
import torch
from transformers import DynamicCache

import pydecode
from pydecode import Sampler, SamplingParams

from tests.generation.models import EOS, VOCAB, tiny_model

REQUESTS = [  # (prompt, params)
    ([1, 40, 41, 42], SamplingParams(temperature=0.0, max_tokens=9)),
    ([1, 17, 99], SamplingParams(temperature=0.9, top_k=40, top_p=0.9, seed=7, max_tokens=12)),
    ([1, 200, 201, 17, 33], SamplingParams(temperature=1.1, min_p=0.05, seed=3, max_tokens=10, repetition_penalty=1.3,
                                           frequency_penalty=0.4, presence_penalty=0.3)),
    ([1, 9, 9, 9], SamplingParams(temperature=1.0, seed=11, max_tokens=14, no_repeat_ngram_size=2,
                                  bad_words_ids=[[30, 31], [77]], suppress_tokens=[12], logit_bias={50: 4.0})),
    ([1, 66, 67], SamplingParams(temperature=0.8, seed=5, max_tokens=8, n=2, min_new_tokens=4, eos_token_id=EOS)),
    ([1, 120, 121, 122], SamplingParams(temperature=1.0, dynatemp_range=0.6, dynatemp_exponent=1.5, seed=21,
                                        max_tokens=11, typical_p=0.9)),
    ([1, 3, 4], SamplingParams(temperature=0.7, top_h=0.6, epsilon_cutoff=0.01, seed=2, max_tokens=7)),
    ([1, 88], SamplingParams(do_sample=False, max_tokens=6, repetition_penalty=1.5, no_repeat_ngram_size=3)),
]


def expected_tokens(model, prompt, params):
    """What generate gives the request alone: one list of new tokens per return sequence."""
    out = pydecode.generate(model, torch.tensor([prompt]), **params.to_generate_kwargs())
    return [row[len(prompt):].tolist() for row in out]


class Request:
    """One sequence of a request as an engine holds it: its own KV cache, the pending token, the tokens so far."""

    def __init__(self, model, prompt, sequence):
        self.cache, self.tokens, self.sequence = DynamicCache(config=model.config), [], sequence
        self.logits = model(torch.tensor([prompt]), past_key_values=self.cache, use_cache=True).logits[0, -1]

    def feed(self, model, token: int) -> None:
        self.tokens.append(token)
        self.logits = model(torch.tensor([[token]]), past_key_values=self.cache, use_cache=True).logits[0, -1]


def drive(model, requests, max_slots, order_seed=0):
    """The engine's loop: ``requests`` (prompt, params) join two at a time every other step as slots free up,
    leave when finished; rows are shuffled every step. Returns {(request, sequence): new tokens}."""
    sampler = Sampler(max_slots, VOCAB, "cpu", eos_token_id=EOS)
    shuffle = random.Random(order_seed)
    waiting = [(i, j) for i, (_, p) in enumerate(requests) for j in range(p.num_return_sequences)]
    running, free, got, step = {}, list(range(max_slots)), {}, 0
    while waiting or running:
        joined = 0
        while waiting and free and joined < 2 and (step % 2 == 0 or not running):
            key, slot = waiting.pop(0), free.pop(0)
            prompt, params = requests[key[0]]
            sampler.add_request(slot, params, prompt, sequence_index=key[1])
            running[slot], joined = (key, Request(model, prompt, key[1])), joined + 1
        order = list(running)
        shuffle.shuffle(order)
        logits = torch.stack([running[s][1].logits for s in order])
        tokens = sampler.sample(logits, order).token_ids
        finished = sampler.append(order, tokens)
        for slot, token, done in zip(order, tokens.tolist(), finished.tolist()):
            key, request = running[slot]
            request.feed(model, token)
            if done:
                got[key] = request.tokens
                sampler.remove(slot)
                free.append(slot)
                del running[slot]
        step += 1
    return got


def assert_matches_generate(model, requests, got):
    assert len(got) == sum(p.num_return_sequences for _, p in requests)
    for i, (prompt, params) in enumerate(requests):
        for j, tokens in enumerate(expected_tokens(model, prompt, params)):
            assert got[(i, j)] == tokens, (i, j, params)


@torch.no_grad()
@pytest.mark.parametrize("max_slots", [3, 16])
def test_sampler_loop_reproduces_generate_per_request(max_slots):
    model = tiny_model("llama")
    assert_matches_generate(model, REQUESTS, drive(model, REQUESTS, max_slots, order_seed=max_slots))


def greedy_path(model, prompt, count=6):
    return expected_tokens(model, prompt, SamplingParams(temperature=0.0, max_tokens=count))[0]


# each builds, from a prompt's unconstrained greedy path, params whose constraint changes that path
BINDING = {
    "suppress_tokens": lambda path: dict(suppress_tokens=[path[0]]),
    "bad_words_ids_one_token": lambda path: dict(bad_words_ids=[[path[1]]]),
    "bad_words_ids_sequence": lambda path: dict(bad_words_ids=[[path[0], path[1]]]),
    "logit_bias": lambda path: dict(logit_bias={path[0]: -50.0, 7: 30.0}),
    "min_new_tokens": lambda path: dict(eos_token_id=[path[2]], min_new_tokens=4),
    "eos_token_id": lambda path: dict(eos_token_id=[path[2]]),
    "repetition_penalty": lambda path: dict(repetition_penalty=5.0),
    "frequency_penalty": lambda path: dict(frequency_penalty=2.0),
    "presence_penalty": lambda path: dict(presence_penalty=2.0),
}


@torch.no_grad()
@pytest.mark.parametrize("name", sorted(BINDING))
def test_each_constraint_binds_and_matches_generate(name):
    model = tiny_model("llama")
    prompts = [[1, 40, 41, 42], [1, 17, 99], [1, 9, 9, 9]]
    requests = []
    for k, prompt in enumerate(prompts):
        path = greedy_path(model, prompt, 12)
        params = SamplingParams(temperature=0.0, max_tokens=12, **BINDING[name](path))
        assert expected_tokens(model, prompt, params)[0] != path  # the constraint changes the greedy path
        requests.append((prompt, params))
        requests.append((prompt, SamplingParams(temperature=0.9, seed=k, max_tokens=9, **BINDING[name](path))))
    assert_matches_generate(model, requests, drive(model, requests, 4))


@torch.no_grad()
def test_no_repeat_ngram_binds_and_matches_generate():
    model = tiny_model("llama")
    prompt = [1, 9, 9, 9, 9, 9, 9]
    looping = expected_tokens(model, prompt, SamplingParams(temperature=0.0, max_tokens=20))[0]
    requests = [(prompt, SamplingParams(temperature=0.0, max_tokens=20, no_repeat_ngram_size=n)) for n in (1, 2, 3)]
    requests.append((prompt, SamplingParams(temperature=1.0, seed=9, max_tokens=20, no_repeat_ngram_size=2)))
    assert any(expected_tokens(model, p, params)[0] != looping for p, params in requests[:3])
    assert_matches_generate(model, requests, drive(model, requests, 3))
