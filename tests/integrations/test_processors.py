"""The engine-free part of the serving integrations: request arguments and the per-request processors, checked
against transformers' processors of the same names."""
import pytest
import torch
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    SequenceBiasLogitsProcessor,
    TopHLogitsWarper,
    TypicalLogitsWarper,
)

from pydecode.integrations.processors import apply_warpers
from pydecode.integrations.request_args import RequestArgs, parse_request_args
from pydecode.ops.sample.dynatemp import dynamic_temperature

from tests.support.request_bans import RequestBans

VOCAB = 50


@pytest.mark.parametrize("extras, field", [
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
    ({"no_repeat_ngram_size": 2.5}, "no_repeat_ngram_size"),
    ({"typical_p": 0.0}, "typical_p"),
    ({"typical_p": 1.5}, "typical_p"),
    ({"top_h": -0.1}, "top_h"),
    ({"epsilon_cutoff": 1.0}, "epsilon_cutoff"),
    ({"eta_cutoff": "0.1"}, "eta_cutoff"),
    ({"dynatemp_range": -1}, "dynatemp_range"),
    ({"dynatemp_exponent": -1}, "dynatemp_exponent"),
    ({"bad_words_ids": [[1, 2], []]}, "bad_words_ids"),
    ({"bad_words_ids": [1, 2]}, "bad_words_ids"),
    ({"sequence_bias": [[[1, 2], float("inf")]]}, "sequence_bias"),
    ({"sequence_bias": {"1": 2.0}}, "sequence_bias"),
    ({"sequence_bias": "[[[1], 2.0]"}, "sequence_bias"),
    ({"bad_words_ids": "[[1], [-2]]"}, "bad_words_ids"),
])
def test_bad_arguments_raise_naming_the_field(extras, field):
    with pytest.raises(ValueError, match=field):
        parse_request_args(extras)


def test_arguments_parse_and_say_what_is_active():
    assert parse_request_args(None) == RequestArgs()
    assert not RequestArgs().has_bans and not RequestArgs().has_warpers
    args = parse_request_args({"no_repeat_ngram_size": 2, "bad_words_ids": [[3, 4]], "typical_p": 0.9,
                               "sequence_bias": [[[5], -1.0]], "other_plugin_arg": object()})
    assert args.no_repeat_ngram_size == 2 and args.bad_words_ids == ((3, 4),)
    assert args.sequence_bias == (((5,), -1.0),) and args.typical_p == 0.9
    assert args.has_bans and args.has_warpers
    as_text = parse_request_args({"bad_words_ids": "[[3, 4]]", "sequence_bias": "[[[5], -1.0]]"})
    assert as_text.bad_words_ids == args.bad_words_ids and as_text.sequence_bias == args.sequence_bias
    assert parse_request_args({"eta_cutoff": 0.01}).has_warpers and not parse_request_args({"top_h": 0}).has_warpers


def _case(seed):
    generator = torch.Generator().manual_seed(seed)
    history = torch.randint(0, 6, (1, 12), generator=generator)  # a small alphabet: repeats and matches occur
    return torch.randn(1, VOCAB, generator=generator), history


@pytest.mark.parametrize("seed", range(5))
def test_bans_match_transformers(seed):
    logits, history = _case(seed)
    prefix = history[0, -2:].tolist()
    extras = {"no_repeat_ngram_size": 3, "bad_words_ids": [prefix + [7], [9], [VOCAB + 3]],
              "sequence_bias": [[prefix + [11], 4.0], [[12], -2.5], [[VOCAB + 1], 1.0]]}
    got = RequestBans(parse_request_args(extras), VOCAB, "cpu").apply(logits.clone(), history)
    want = SequenceBiasLogitsProcessor([[prefix + [11], 4.0], [[12], -2.5]])(history, logits.clone())
    want = NoRepeatNGramLogitsProcessor(3)(history, want)
    want = NoBadWordsLogitsProcessor([prefix + [7], [9]], eos_token_id=None)(history, want)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert got[0, 7] == float("-inf") and got[0, 9] == float("-inf")


def test_bans_leave_wider_logits_columns_alone():
    logits, history = _case(0)
    wide = torch.cat([logits, torch.zeros(1, 14)], dim=1)
    got = RequestBans(parse_request_args({"no_repeat_ngram_size": 1}), VOCAB, "cpu").apply(wide, history)
    assert torch.equal(got[:, VOCAB:], torch.zeros(1, 14))
    assert torch.isinf(got[0, history[0]]).all()


@pytest.mark.parametrize("name, value, warper", [
    ("typical_p", 0.7, TypicalLogitsWarper), ("top_h", 0.6, TopHLogitsWarper),
    ("epsilon_cutoff", 0.03, EpsilonLogitsWarper), ("eta_cutoff", 0.05, EtaLogitsWarper),
])
def test_warpers_match_transformers(name, value, warper):
    logits = torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(1)) * 2
    temperatures = [0.5, 1.0, 1.5, 0.8]
    scaled = logits / torch.tensor(temperatures)[:, None]
    got = apply_warpers(scaled.clone(), [RequestArgs(**{name: value})] * 4, temperatures)
    want = warper(value)(torch.zeros(4, 1, dtype=torch.int64), scaled.clone())
    torch.testing.assert_close(got, want)
    assert bool(torch.isinf(got).any())  # the values cut something


def test_warpers_leave_rows_without_arguments_alone():
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(2))
    got = apply_warpers(logits.clone(), [RequestArgs(typical_p=0.5), RequestArgs()], [1.0, 1.0])
    assert torch.equal(got[1], logits[1]) and not torch.equal(got[0], logits[0])


def test_dynamic_temperature_rescales_the_divided_logits():
    logits = torch.randn(2, VOCAB, generator=torch.Generator().manual_seed(3))
    base = [0.7, 1.2]
    args = [RequestArgs(dynatemp_range=0.5, dynatemp_exponent=1.5), RequestArgs()]
    got = apply_warpers(logits / torch.tensor(base)[:, None], args, base)
    t_dyn = dynamic_temperature(logits[:1], 0.7, 0.5, 1.5)
    torch.testing.assert_close(got[0], logits[0] / t_dyn[0])
    torch.testing.assert_close(got[1], logits[1] / 1.2)
