"""Assisted and prompt-lookup decoding: greedy parity with plain greedy (and transformers), speculative sampling's
distribution, acceptance stats, prompt lookup's back-off, and clear errors.

The distribution tests are chi-square tests at the 0.1% level over fixed seeds: the outcome is deterministic, they
cannot flake.
"""
import copy
import functools

import pytest
import torch
from scipy.stats import chisquare
from transformers import LlamaConfig, LlamaForCausalLM

import pydecode
from pydecode.ops.reference import process_logits

from tests.generation.models import EOS, PAD, VOCAB, padded_batch, tiny_model

EOS_LIST = [EOS, 9, 17, 33, 44, 55, 66, 77, 88, 99, 111]


@functools.lru_cache(maxsize=None)
def tiny_draft():
    """A one-layer llama sharing the tiny models' vocabulary: it agrees badly with them."""
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         eos_token_id=EOS, bos_token_id=1, pad_token_id=PAD)
    return LlamaForCausalLM(config).eval()


def repetitive_prompts():
    """Two unpadded prompts that repeat a phrase, so prompt lookup finds matches."""
    g = torch.Generator().manual_seed(5)
    phrase = torch.randint(6, VOCAB, (2, 6), generator=g)
    return torch.cat([phrase, phrase, phrase[:, :3]], dim=1)


@pytest.mark.parametrize("kind,how,eos", [
    *[("llama", how, True) for how in ("self_draft", "tiny_draft", "heuristic", "lookup", "lookup_ngram3")],
    ("llama", "tiny_draft", False), ("llama", "lookup", False), ("gpt2", "tiny_draft", True), ("gpt2", "lookup", False),
])
def test_greedy_matches_plain_greedy(kind, how, eos):
    model = tiny_model(kind)
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=24, do_sample=False, eos_token_id=EOS_LIST if eos else EOS)
    expected = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    extra = {
        "self_draft": dict(assistant_model=model, num_assistant_tokens=5),
        "tiny_draft": dict(assistant_model=tiny_draft(), num_assistant_tokens=3),
        "heuristic": dict(assistant_model=model, num_assistant_tokens=2,
                          num_assistant_tokens_schedule="heuristic_transient"),
        "lookup": dict(prompt_lookup_num_tokens=4),
        "lookup_ngram3": dict(prompt_lookup_num_tokens=6, max_matching_ngram_size=3),
    }[how]
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs, **extra)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("how", ["assisted", "lookup"])
def test_greedy_matches_transformers_batch_one(how):
    model = tiny_model("llama")
    ids = repetitive_prompts()[:1]
    extra = dict(assistant_model=model) if how == "assisted" else dict(prompt_lookup_num_tokens=3)
    kwargs = dict(max_new_tokens=20, do_sample=False, return_dict_in_generate=True, output_scores=True)
    expected = model.generate(ids, **kwargs, **extra)
    got = pydecode.generate(model, ids, **kwargs, **extra)
    assert torch.equal(got.sequences, expected.sequences)
    for ours, theirs in zip(got.scores, expected.scores, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def test_eos_inside_an_accepted_run():
    """Self-drafting accepts every draft: a row's eos lands inside a long accepted run and must end the row there."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=30, do_sample=False, eos_token_id=EOS_LIST)
    expected = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, assistant_model=model, num_assistant_tokens=10,
                            return_dict_in_generate=True, **kwargs)
    assert torch.equal(got.sequences, expected)
    assert bool(torch.isin(expected[:, ids.shape[1]:-1], torch.tensor(EOS_LIST)).any())  # some row ended early
    assert got.acceptance_rate == 1.0


def test_acceptance_stats_and_streamer():
    model = tiny_model("llama")
    ids = repetitive_prompts()
    out = pydecode.generate(model, ids, max_new_tokens=16, do_sample=False, prompt_lookup_num_tokens=4,
                            return_dict_in_generate=True)
    assert 0.0 <= out.acceptance_rate <= 1.0 and out.mean_accepted_tokens >= 0.0
    full = pydecode.generate(model, ids, max_new_tokens=16, do_sample=False, assistant_model=model,
                             num_assistant_tokens=4, return_dict_in_generate=True)
    assert full.acceptance_rate == 1.0 and full.mean_accepted_tokens > 2.0

    class Collect:
        def __init__(self):
            self.chunks = []

        def put(self, value):
            self.chunks.append(value.reshape(-1))

        def end(self):
            self.ended = True

    streamer = Collect()
    seq = pydecode.generate(model, ids[:1], max_new_tokens=16, do_sample=False, assistant_model=model,
                            num_assistant_tokens=4, streamer=streamer)
    assert streamer.ended and torch.equal(torch.cat(streamer.chunks), seq[0])


def joint_distribution(model, prompt, params):
    """(V, V) probabilities of the first two tokens under the main model's processed distribution."""
    logits = model(prompt[None]).logits[0, -1:]
    first = process_logits(logits, **params).softmax(-1)[0]
    support = first.nonzero().squeeze(1)
    joint = torch.zeros(VOCAB, VOCAB)
    for t in support.tolist():
        nxt = model(torch.cat([prompt, torch.tensor([t])])[None]).logits[0, -1:]
        joint[t] = first[t] * process_logits(nxt, **params).softmax(-1)[0]
    return joint


@pytest.mark.parametrize("draft", ["agrees", "disagrees"])
def test_speculative_sampling_keeps_the_distribution(draft):
    """Rows with one prompt and distinct seeds: the second token is verified (one draft); the frequencies of the
    (first, second) pairs match the main model's processed joint distribution (chi-square, 0.1% level)."""
    model = tiny_model("llama")
    assistant = model if draft == "agrees" else tiny_draft()
    params = dict(temperature=0.7, top_k=4)
    prompt = padded_batch(1, 6, seed=3)[0][0]
    rows = 2000
    with torch.no_grad():
        expected = joint_distribution(model, prompt, params)
        out = pydecode.generate(model, prompt.repeat(rows, 1), do_sample=True, max_new_tokens=3, seed=1234,
                                assistant_model=assistant, num_assistant_tokens=1, return_dict_in_generate=True,
                                **params)
    pairs = out.sequences[:, prompt.shape[0]: prompt.shape[0] + 2]
    counts = torch.zeros(VOCAB, VOCAB)
    counts.index_put_((pairs[:, 0], pairs[:, 1]), torch.ones(rows), accumulate=True)
    assert bool((expected[counts > 0] > 0).all()), "a pair outside the processed support was drawn"
    cells = expected > 0
    _, p_value = chisquare(counts[cells], expected[cells] / expected[cells].sum() * rows)
    assert p_value > 1e-3
    if draft == "disagrees":
        assert out.acceptance_rate < 0.5
    else:
        assert out.acceptance_rate == 1.0


def test_sampling_is_reproducible_and_mixes_greedy_rows():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(do_sample=True, max_new_tokens=12, seed=7, top_p=0.9, attention_mask=mask,
                  temperature=torch.tensor([0.0, 0.8, 1.1]), prompt_lookup_num_tokens=3)
    first = pydecode.generate(model, ids, **kwargs)
    assert torch.equal(first, pydecode.generate(model, ids, **kwargs))
    greedy = pydecode.generate(model, ids[:1], attention_mask=mask[:1], max_new_tokens=12, do_sample=False)
    assert torch.equal(first[:1], greedy)


def test_bad_input_raises_clear_errors():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    other_vocab = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB + 8, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    with pytest.raises(ValueError, match="vocabulary"):
        pydecode.generate(model, ids, attention_mask=mask, assistant_model=other_vocab, max_new_tokens=4)
    with pytest.raises(ValueError, match="dtype"):
        pydecode.generate(model, ids, attention_mask=mask, assistant_model=copy.deepcopy(tiny_draft()).double(),
                          max_new_tokens=4)
    meta = copy.deepcopy(tiny_draft()).to("meta")  # a copy: .to moves the cached draft itself
    with pytest.raises(ValueError, match="is on meta"):
        pydecode.generate(model, ids, attention_mask=mask, assistant_model=meta, max_new_tokens=4)
    with pytest.raises(ValueError, match="num_assistant_tokens"):
        pydecode.generate(model, ids, attention_mask=mask, assistant_model=model, num_assistant_tokens=0,
                          max_new_tokens=4)
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens"):
        pydecode.generate(model, ids, attention_mask=mask, prompt_lookup_num_tokens=0, max_new_tokens=4)
    with pytest.raises(NotImplementedError, match="output_attentions"):
        pydecode.generate(model, ids, attention_mask=mask, prompt_lookup_num_tokens=2, max_new_tokens=4,
                          return_dict_in_generate=True, output_attentions=True)


def first_layers_draft(model, layers):
    """Self-speculative draft: ``model``'s first ``layers`` decoder layers with its own final norm and head (shared)."""
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    with torch.device("meta"):
        draft = type(model)(config)
    draft.model.embed_tokens, draft.model.norm = model.model.embed_tokens, model.model.norm
    draft.model.rotary_emb, draft.lm_head = model.model.rotary_emb, model.lm_head
    draft.model.layers = torch.nn.ModuleList(model.model.layers[:layers])
    return draft.eval()


@pytest.mark.real_model
def test_smollm2_greedy_lookup_and_self_draft_match_plain_greedy():
    """SmolLM2-135M, two left-padded input-grounded prompts: prompt lookup and assisted decoding with a 4-layer
    self-speculative draft emit plain greedy's tokens, with ragged acceptance across the rows."""
    from pydecode.models import load_model
    model, tokenizer = load_model("smollm2")
    passage = "The lighthouse keeper climbed the stairs each evening and watched the ships on the grey water."
    prompts = [f"Repeat this sentence: {passage}\nRepeated: The lighthouse keeper",
               f"Copy: {passage} {passage}\nCopy: The"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=12, do_sample=False)
    with torch.no_grad():
        expected = pydecode.generate(model, **batch, **kwargs)
        lookup = pydecode.generate(model, **batch, **kwargs, prompt_lookup_num_tokens=5, return_dict_in_generate=True)
        assisted = pydecode.generate(model, **batch, **kwargs, assistant_model=first_layers_draft(model, 4),
                                     num_assistant_tokens=3, return_dict_in_generate=True)
    assert torch.equal(lookup.sequences, expected) and torch.equal(assisted.sequences, expected)
    assert lookup.acceptance_rate > 0.5  # the answers copy the passage
    assert 0.0 <= assisted.acceptance_rate <= 1.0


def test_lookup_backs_off_after_failed_drafts(monkeypatch):
    """A row that accepts fewer than 2 of its drafts drafts nothing for the next 1, 2, 4, 8 steps (doubling with each
    failure, reset by a success; the first step, the prompt's forward, excepted): those steps run a one-token
    forward. Tokens stay plain greedy's."""
    import pydecode.generation.strategies.speculative.speculative as speculative
    model = tiny_model("llama")
    ids = padded_batch(1, 7, seed=4)[0]  # failures, successes, and failures in a row
    events = []  # ("forward", width) and ("verify", drafted, accepted), in order
    hook = model.register_forward_pre_hook(
        lambda _, args, kwargs: events.append(("forward", kwargs["input_ids"].shape[1])), with_kwargs=True)
    verify = speculative.verify_unchecked

    def spy(drafts, draft_scores, target, num_draft, *rest):
        accepted, next_tokens = verify(drafts, draft_scores, target, num_draft, *rest)
        events.append(("verify", int(num_draft[0]), int(accepted[0])))
        return accepted, next_tokens

    monkeypatch.setattr(speculative, "verify_unchecked", spy)
    try:
        got = pydecode.generate(model, ids, max_new_tokens=60, do_sample=False, prompt_lookup_num_tokens=6)
    finally:
        hook.remove()
    assert torch.equal(got, pydecode.generate(model, ids, max_new_tokens=60, do_sample=False))
    steps = []  # per decode step: (forward width, drafted, accepted)
    for event in events:
        if event[0] == "forward":
            steps.append([event[1], 0, 0])
        else:
            steps[-1][1:] = event[1:]
    wait, backoff, failures = 0, 1, 0
    for width, drafted, accepted in steps[1:]:  # the first step (the prompt's forward) starts no back-off
        if wait:
            assert width == 1, "a backed-off row drafted"
            wait -= 1
        elif drafted:
            failed = accepted < min(2, drafted)
            failures += failed
            wait, backoff = (backoff, min(2 * backoff, 8)) if failed else (0, 1)
    assert failures >= 5 and sum(width == 1 for width, _, _ in steps) >= 5


@pytest.mark.parametrize("how", ["assisted", "lookup"])
@pytest.mark.parametrize("prompt_len,new_tokens", [(1, 16), (7, 1), (7, 2)])
def test_short_prompts_and_outputs(how, prompt_len, new_tokens):
    """The first step runs the prompt with the first drafts: a one-token prompt, and one or two new tokens (no room
    for a draft, room for one)."""
    model = tiny_model("llama")
    ids, mask = padded_batch(2, prompt_len, seed=6) if prompt_len > 1 else (torch.tensor([[1], [7]]), None)
    extra = dict(assistant_model=tiny_draft(), num_assistant_tokens=3) if how == "assisted" else \
        dict(prompt_lookup_num_tokens=3)
    kwargs = dict(max_new_tokens=new_tokens, do_sample=False, eos_token_id=EOS_LIST, repetition_penalty=1.2,
                  attention_mask=mask)
    expected = pydecode.generate(model, ids, **kwargs)
    got = pydecode.generate(model, ids, **kwargs, **extra, return_dict_in_generate=True, output_logprobs=True)
    assert torch.equal(got.sequences, expected)
    assert got.logprobs.shape == (2, expected.shape[1] - prompt_len)


def test_fast_output_head_reroutes_only_the_head(monkeypatch):
    """Under the mode, a few positions' logits come from one ``torch.mm`` over the head weight and equal the
    model's own within float error; other shapes and devices get no mode."""
    import contextlib

    from pydecode.generation.model.output_head import fast_output_head
    model = tiny_model("llama")
    ids = torch.randint(6, VOCAB, (2, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids).logits
        calls = []
        mm = torch.mm
        monkeypatch.setattr(torch, "mm", lambda a, b: calls.append(a) or mm(a, b))
        with fast_output_head(model, 6):
            got = model(ids).logits
    assert len(calls) == 1 and calls[0] is model.lm_head.weight
    assert got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    for rows in (1, 9):
        assert isinstance(fast_output_head(model, rows), contextlib.nullcontext)
    assert isinstance(fast_output_head(copy.deepcopy(model).double(), 4), contextlib.nullcontext)
