"""Assisted and prompt-lookup decoding with history-dependent processing and stopping: token-for-token parity with
plain greedy for every processor, stops inside accepted runs, logprobs, and speculative sampling's distribution
under a penalty.

The distribution test is a chi-square test at the 0.1% level over fixed seeds: its outcome is deterministic, it
cannot flake.
"""
import string

import pytest
import torch
from scipy.stats import chisquare
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerFast, StoppingCriteria

import pydecode
from pydecode.ops.reference import apply_penalties_, process_logits, prompt_token_mask

from tests.generation.models import EOS, PAD, VOCAB, padded_batch, tiny_model
from tests.generation.test_extra_processors import case_kwargs as extra_case_kwargs
from tests.generation.test_speculative import EOS_LIST, tiny_draft

STRATEGIES = {
    "lookup": lambda model: dict(prompt_lookup_num_tokens=4),
    "self_draft": lambda model: dict(assistant_model=model, num_assistant_tokens=6),  # accepts every draft
    "tiny_draft": lambda model: dict(assistant_model=tiny_draft(), num_assistant_tokens=3),  # ragged acceptance
}


def tiny_tokenizer():
    """A tokenizer for the tiny models' 256 ids: one character per token (letters and digits, then CJK)."""
    chars = string.ascii_letters + string.digits
    chars += "".join(chr(0x4E00 + i) for i in range(VOCAB - len(chars)))
    backend = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token=chars[0]))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


class NoImmediateRepeat(LogitsProcessor):
    """Bans each row's last two tokens, and on even lengths the token ``length % V``: depends on the history and on
    its length, so it must be called per draft position with the history that position has."""

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        rows = torch.arange(scores.shape[0])
        scores[rows, input_ids[:, -1]] = float("-inf")
        scores[rows, input_ids[:, -2]] = float("-inf")
        if input_ids.shape[1] % 2 == 0:
            scores[:, input_ids.shape[1] % VOCAB] = float("-inf")
        return scores


class StopAfterRepeat(StoppingCriteria):
    """Ends a row once its last token already occurred among the 8 before it."""

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids[:, -9:-1] == input_ids[:, -1:]).any(1)


def plain_greedy(model, ids, mask, **kwargs):
    return pydecode.generate(model, ids, attention_mask=mask, do_sample=False, **kwargs)


def case_kwargs(case, model, ids, mask):
    """The processor settings of ``case``; bad words and stop strings are picked from plain greedy's own output so
    that they matter."""
    prompt_len = ids.shape[1]
    if case in ("bad_words", "stop_strings"):
        free = plain_greedy(model, ids, mask, max_new_tokens=24, eos_token_id=EOS)[:, prompt_len:]
        if case == "bad_words":
            return dict(bad_words_ids=[free[0, 4:6].tolist(), free[1, 9:12].tolist(), free[2, 2:4].tolist()])
        return dict(stop_strings=[tiny_tokenizer().decode(free[1, 7:9]), tiny_tokenizer().decode(free[2, 13:16])],
                    tokenizer=tiny_tokenizer())
    if case in EXTRA_CASES:
        return extra_case_kwargs(case, model, ids, mask)
    return {
        "repetition": dict(repetition_penalty=1.5),
        "frequency_presence": dict(frequency_penalty=0.8, presence_penalty=0.6),
        "per_row_penalty": dict(repetition_penalty=torch.tensor([1.0, 1.4, 2.0])),
        "no_repeat_ngram_2": dict(no_repeat_ngram_size=2),
        "no_repeat_ngram_3": dict(no_repeat_ngram_size=3),
        "min_new_tokens": dict(min_new_tokens=10, eos_token_id=EOS_LIST),
        "min_length": dict(min_length=prompt_len + 8, eos_token_id=EOS_LIST),
        "forced_eos": dict(forced_eos_token_id=9),
        "logits_processor": dict(logits_processor=LogitsProcessorList([NoImmediateRepeat()])),
        "stopping_criteria": dict(stopping_criteria=[StopAfterRepeat()]),
    }[case]


EXTRA_CASES = ["sequence_bias", "encoder_repetition", "encoder_no_repeat_2", "exponential_decay", "begin_suppress"]
CASES = ["repetition", "frequency_presence", "per_row_penalty", "no_repeat_ngram_2", "no_repeat_ngram_3", "bad_words",
         "min_new_tokens", "min_length", "forced_eos", "logits_processor", "stopping_criteria", "stop_strings",
         *EXTRA_CASES]


@pytest.mark.parametrize("how", list(STRATEGIES))
@pytest.mark.parametrize("case", CASES)
def test_greedy_with_processing_matches_plain_greedy(case, how):
    """Three left-padded rows: the processing changes plain greedy's tokens, and the speculative strategies emit
    exactly those tokens; a self-draft, processed like the main model, has every draft accepted."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=24, eos_token_id=EOS)
    kwargs.update(case_kwargs(case, model, ids, mask))
    expected = plain_greedy(model, ids, mask, **kwargs)
    unprocessed = plain_greedy(model, ids, mask, max_new_tokens=24, eos_token_id=kwargs["eos_token_id"])
    assert not torch.equal(expected, unprocessed), f"{case} does not change plain greedy's tokens"
    got = plain_greedy(model, ids, mask, return_dict_in_generate=True, **kwargs, **STRATEGIES[how](model))
    assert torch.equal(got.sequences, expected)
    if how == "self_draft":
        assert got.acceptance_rate == 1.0


@pytest.mark.parametrize("case", ["min_new_tokens", "stop_strings", "stopping_criteria"])
def test_stop_inside_an_accepted_run(case):
    """Self-drafting 10 tokens a step: rows stop inside long accepted runs, at plain greedy's token."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=30, eos_token_id=EOS)
    kwargs.update(case_kwargs(case, model, ids, mask))
    expected = plain_greedy(model, ids, mask, **kwargs)
    got = plain_greedy(model, ids, mask, assistant_model=model, num_assistant_tokens=10, return_dict_in_generate=True,
                       **kwargs)
    assert torch.equal(got.sequences, expected)
    assert got.mean_accepted_tokens > 3
    ended = expected[:, -1] == PAD  # rows padded to the end finished early
    assert bool(ended.any()), "no row stopped before max_new_tokens"


@pytest.mark.parametrize("how", ["assisted", "lookup"])
@pytest.mark.parametrize("processing", [dict(repetition_penalty=1.4), dict(no_repeat_ngram_size=2),
                                        dict(bad_words_ids=[[40, 41], [7, 8, 9]], min_new_tokens=6)])
def test_batch_one_matches_transformers(how, processing):
    model = tiny_model("llama")
    ids = padded_batch(1, 8, seed=4)[0]
    extra = dict(assistant_model=tiny_draft(), num_assistant_tokens=3) if how == "assisted" else \
        dict(prompt_lookup_num_tokens=3)
    kwargs = dict(max_new_tokens=20, do_sample=False, eos_token_id=EOS_LIST, **processing)
    expected = model.generate(ids, **kwargs, **extra)
    assert torch.equal(pydecode.generate(model, ids, **kwargs, **extra), expected)


@pytest.mark.parametrize("how", list(STRATEGIES))
def test_logprobs_match_plain_greedy(how):
    """Raw and processed logprobs, the top 3, scores and logits of every token equal plain greedy's (within 1e-5)."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=16, eos_token_id=EOS, repetition_penalty=1.3, no_repeat_ngram_size=3,
                  return_dict_in_generate=True, output_logprobs=True, top_logprobs=3, output_scores=True,
                  output_logits=True)
    expected = plain_greedy(model, ids, mask, **kwargs)
    got = plain_greedy(model, ids, mask, **kwargs, **STRATEGIES[how](model))
    assert torch.equal(got.sequences, expected.sequences)
    assert not bool((expected.sequences[:, ids.shape[1]:-1] == EOS).any())  # every row runs to the end
    for name in ("logprobs", "processed_logprobs", "top_logprobs"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=0, atol=1e-5)
    assert torch.equal(got.top_logprob_ids, expected.top_logprob_ids)
    assert not torch.equal(expected.logprobs, expected.processed_logprobs)  # the penalties moved them
    for name in ("scores", "logits"):
        for ours, theirs in zip(getattr(got, name), getattr(expected, name), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def processed_probs(model, tokens, prompt_len, params, penalties):
    """The main model's processed next-token distribution after ``tokens`` (1-D), penalties counting the tokens
    after the first ``prompt_len``."""
    logits = model(tokens[None]).logits[0, -1:].float()
    counts = torch.zeros(1, VOCAB, dtype=torch.int32)
    counts[0].index_add_(0, tokens[prompt_len:], torch.ones(tokens.shape[0] - prompt_len, dtype=torch.int32))
    apply_penalties_(logits, counts, prompt_token_mask(tokens[None, :prompt_len], VOCAB), **penalties)
    return process_logits(logits, **params).softmax(-1)[0]


def three_token_distribution(model, prompt, params, penalties):
    """{(t1, t2, t3): probability} under the main model's processed distribution (small support: top-k)."""
    prompt_len = prompt.shape[0]
    out = {}
    first = processed_probs(model, prompt, prompt_len, params, penalties)
    for a in first.nonzero().squeeze(1).tolist():
        after_a = torch.cat([prompt, torch.tensor([a])])
        second = processed_probs(model, after_a, prompt_len, params, penalties)
        for b in second.nonzero().squeeze(1).tolist():
            third = processed_probs(model, torch.cat([after_a, torch.tensor([b])]), prompt_len, params, penalties)
            for c in third.nonzero().squeeze(1).tolist():
                out[(a, b, c)] = float(first[a] * second[b] * third[c])
    return out


@pytest.mark.parametrize("how", ["self_draft", "tiny_draft", "lookup"])
def test_speculative_sampling_with_penalties_keeps_the_distribution(how):
    """4000 rows with one prompt and distinct seeds; two drafts per step, so tokens 2 and 3 are verified in one block
    whose second position counts the first draft. The (t1, t2, t3) frequencies match the main model's penalised,
    processed joint distribution (chi-square at the 0.1% level; cells expected below 5 are pooled)."""
    model = tiny_model("llama")
    params = dict(temperature=1.0, top_k=4)
    penalties = dict(repetition=1.1, presence=2.0)
    rows = 4000
    with torch.no_grad():
        # the model's own greedy text: its likely tokens are in the prompt, where the penalties hit them; seed 5's
        # third token moves most when the penalty misses the second, seed 0's repeats itself, so lookup has drafts
        start = padded_batch(1, 4, seed=0 if how == "lookup" else 5)[0]
        prompt = pydecode.generate(model, start, max_new_tokens=8, do_sample=False, eos_token_id=None)[0]
        expected = three_token_distribution(model, prompt, params, penalties)
        unpenalised = three_token_distribution(model, prompt, params, {})
        extra = {"self_draft": dict(assistant_model=model, num_assistant_tokens=2),
                 "tiny_draft": dict(assistant_model=tiny_draft(), num_assistant_tokens=2),
                 "lookup": dict(prompt_lookup_num_tokens=2)}[how]
        out = pydecode.generate(model, prompt.repeat(rows, 1), do_sample=True, max_new_tokens=4, seed=99,
                                eos_token_id=None, pad_token_id=0, return_dict_in_generate=True,
                                repetition_penalty=penalties["repetition"], presence_penalty=penalties["presence"],
                                **params, **extra)
    assert sum(abs(p - unpenalised.get(cell, 0.0)) for cell, p in expected.items()) > 0.2  # the penalty matters
    drawn = {}
    for triple in out.sequences[:, prompt.shape[0]: prompt.shape[0] + 3].tolist():
        drawn[tuple(triple)] = drawn.get(tuple(triple), 0) + 1
    assert set(drawn) <= set(expected), "a sequence outside the processed support was drawn"
    cells = sorted(expected, key=expected.get, reverse=True)
    big = [c for c in cells if expected[c] * rows >= 5]
    small = [c for c in cells if expected[c] * rows < 5]
    bins = [[c] for c in big] + ([small] if small else [])
    observed = [sum(drawn.get(c, 0) for c in cells) for cells in bins]
    probs = torch.tensor([sum(expected[c] for c in cells) for cells in bins], dtype=torch.float64)
    _, p_value = chisquare(observed, (probs / probs.sum() * rows).tolist())
    assert p_value > 1e-3
    if how == "self_draft":
        assert out.acceptance_rate == 1.0  # the draft is processed as the main model: p == q
    else:
        assert out.acceptance_rate < 1.0  # rejections: the residual draws are checked too
    if how == "lookup":
        assert out.acceptance_rate > 0.1


@pytest.mark.real_model
def test_smollm2_stop_strings_and_penalties_match_plain_greedy():
    """SmolLM2-135M, two left-padded input-grounded prompts, a repetition penalty and multi-character stop strings:
    prompt lookup and assisted decoding (4-layer self-speculative draft) stop each row at plain greedy's token."""
    from pydecode.models import load_model

    from tests.generation.test_speculative import first_layers_draft
    model, tokenizer = load_model("smollm2")
    passage = "The lighthouse keeper climbed the stairs each evening and watched the ships on the grey water."
    prompts = [f"Repeat this sentence: {passage}\nRepeated: The lighthouse keeper",
               f"Copy: {passage} {passage}\nCopy: The"]
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=24, do_sample=False, repetition_penalty=1.1, stop_strings=["grey wat", "ships"],
                  tokenizer=tokenizer)
    with torch.no_grad():
        expected = pydecode.generate(model, **batch, **kwargs)
        lookup = pydecode.generate(model, **batch, **kwargs, prompt_lookup_num_tokens=5, return_dict_in_generate=True)
        assisted = pydecode.generate(model, **batch, **kwargs, assistant_model=first_layers_draft(model, 4),
                                     num_assistant_tokens=3)
    assert torch.equal(lookup.sequences, expected) and torch.equal(assisted, expected)
    assert lookup.mean_accepted_tokens > 1  # the stops land inside accepted runs
    texts = tokenizer.batch_decode(expected[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
    assert all(t.rstrip().endswith(("grey water", "ships")) for t in texts), texts


def test_stopping_a_batch_needs_a_pad_token():
    """Without pad or eos tokens plain decoding keeps extending stopped rows; the speculative loop says so."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    with pytest.raises(NotImplementedError, match="pad_token_id"):
        pydecode.generate(model, ids, attention_mask=mask, prompt_lookup_num_tokens=2, max_new_tokens=4,
                          eos_token_id=None, pad_token_id=None, stopping_criteria=[StopAfterRepeat()])
