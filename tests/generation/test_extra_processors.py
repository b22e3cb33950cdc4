"""transformers' less common processors and warpers: sequence_bias, encoder_repetition_penalty,
encoder_no_repeat_ngram_size, exponential_decay_length_penalty, begin_suppress_tokens, guidance_scale, top_h,
epsilon_cutoff and eta_cutoff, and watermarking_config — parity with transformers 5 (tokens and scores), through
greedy, beam search and sampling, and bad input.

Each setting is picked from the unprocessed output so that it changes the tokens (checked: a case that changes
nothing could not fail).
"""
import pytest
import torch
from transformers import SynthIDTextWatermarkingConfig, WatermarkingConfig
from transformers.generation.logits_process import EpsilonLogitsWarper, EtaLogitsWarper, TopHLogitsWarper

import pydecode
from pydecode.generation.strategies.beam.beam import warp_for_beams
from pydecode.ops.sample.cutoffs import epsilon_filter, eta_filter, top_h_filter
from pydecode.sampling.params import RowParams

from tests.generation.models import EOS, VOCAB, padded_batch, tiny_model

EOS_LIST = [EOS, 9, 17, 33, 44, 55, 66, 77, 88, 99]
FEATURES = ("sequence_bias", "encoder_repetition_penalty", "encoder_no_repeat_ngram_size",
            "exponential_decay_length_penalty", "begin_suppress_tokens")


def unprocessed(model, ids, mask, **kwargs):
    kwargs = {k: v for k, v in kwargs.items() if k not in ("return_dict_in_generate", "output_scores")}
    return pydecode.generate(model, ids, attention_mask=mask, **dict(kwargs, do_sample=False))[:, ids.shape[1]:]


def prompt(model):
    """The padded batch followed by 6 tokens of the model's own greedy continuation: the prompt then holds the tokens
    and n-grams the model goes on to emit, so that the encoder-input processors change its output."""
    ids, mask = padded_batch()
    more = unprocessed(model, ids, mask, max_new_tokens=6, eos_token_id=None)
    return torch.cat([ids, more], 1), torch.cat([mask, torch.ones_like(more)], 1)


def case_kwargs(case, model, ids, mask):
    """The settings of ``case``, picked from the unprocessed greedy tokens so that they matter."""
    free = unprocessed(model, ids, mask, max_new_tokens=12, eos_token_id=EOS)
    if case == "sequence_bias":  # a single-token ban, two multi-token boosts that fire after tokens greedy emits
        return dict(sequence_bias=[[[int(free[0, 3])], -30.0], [[int(free[1, 2]), 77], 40.0],
                                   [[int(free[2, 1]), int(free[2, 2]), 99], 40.0], [[int(free[1, 4]), 78], 2.5]])
    if case == "sequence_bias_dict":
        return dict(sequence_bias={(int(free[0, 2]),): -30.0, (int(free[2, 0]), 120): 35.0})
    if case == "begin_suppress":
        return dict(begin_suppress_tokens=free[:, 0].tolist())
    return {
        "encoder_repetition": dict(encoder_repetition_penalty=3.0, repetition_penalty=1.3),
        "encoder_repetition_below_1": dict(encoder_repetition_penalty=0.4, repetition_penalty=1.3),
        "encoder_no_repeat_1": dict(encoder_no_repeat_ngram_size=1),
        "encoder_no_repeat_2": dict(encoder_no_repeat_ngram_size=2, repetition_penalty=0.5),
        "exponential_decay": dict(exponential_decay_length_penalty=(1, 4.0), eos_token_id=[EOS, 9, 17]),
        "decay_with_invalid_values": dict(exponential_decay_length_penalty=(0, 1.3), eos_token_id=EOS_LIST,
                                          remove_invalid_values=True, bad_words_ids=[[9]], min_new_tokens=3),
    }[case]


CASES = ["sequence_bias", "sequence_bias_dict", "begin_suppress", "encoder_repetition", "encoder_repetition_below_1",
         "encoder_no_repeat_1", "encoder_no_repeat_2", "exponential_decay", "decay_with_invalid_values"]


def assert_same_outputs(got, want):
    assert got.sequences.tolist() == want.sequences.tolist()
    assert len(got.scores) == len(want.scores)
    for ours, theirs in zip(got.scores, want.scores):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("case", CASES)
def test_greedy_matches_transformers(kind, case):
    model = tiny_model(kind)
    ids, mask = prompt(model)
    kwargs = dict(max_new_tokens=12, eos_token_id=EOS, do_sample=False, return_dict_in_generate=True,
                  output_scores=True)
    kwargs.update(case_kwargs(case, model, ids, mask))
    want = model.generate(ids, attention_mask=mask, **kwargs)
    plain = unprocessed(model, ids, mask, **{k: v for k, v in kwargs.items() if k not in FEATURES})
    assert want.sequences[:, ids.shape[1]:].tolist() != plain.tolist(), f"{case} changes nothing"
    assert_same_outputs(pydecode.generate(model, ids, attention_mask=mask, **kwargs), want)
    no_dict = dict(kwargs, return_dict_in_generate=False)  # finished rows leave the batch on this path
    assert pydecode.generate(model, ids, attention_mask=mask, **no_dict).tolist() == want.sequences.tolist()


def test_sequence_bias_fires_when_the_history_is_just_its_prefix():
    model = tiny_model("llama")
    ids = torch.tensor([[40]])
    kwargs = dict(max_new_tokens=4, do_sample=False, sequence_bias=[[[40, 77], 60.0], [[40, 77, 78], 60.0]],
                  return_dict_in_generate=True, output_scores=True)
    want = model.generate(ids, **kwargs)
    assert want.sequences[0, 1:3].tolist() == [77, 78]
    assert_same_outputs(pydecode.generate(model, ids, **kwargs), want)


@pytest.mark.parametrize("case", ["sequence_bias", "encoder_repetition", "encoder_no_repeat_2", "exponential_decay",
                                  "begin_suppress"])
def test_beam_search_matches_transformers(case):
    model = tiny_model("llama")
    ids, mask = prompt(model)
    kwargs = dict(num_beams=3, num_return_sequences=2, max_new_tokens=10, eos_token_id=EOS, do_sample=False,
                  return_dict_in_generate=True, output_scores=True)
    kwargs.update(case_kwargs(case, model, ids, mask))
    want = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert_same_outputs(got, want)
    torch.testing.assert_close(got.sequences_scores, want.sequences_scores, rtol=1e-5, atol=1e-5)


WARPERS = {"top_h": dict(top_h=0.4), "epsilon": dict(epsilon_cutoff=3e-3), "eta": dict(eta_cutoff=0.02),
           "all_with_top_k": dict(top_h=0.9, top_k=40, epsilon_cutoff=1e-3, eta_cutoff=5e-3, temperature=0.7)}


@pytest.mark.parametrize("warpers", list(WARPERS))
def test_first_sampling_step_scores_match_transformers(warpers):
    """The processed distribution a sampling step draws from equals transformers' (the draws themselves use
    different random streams), and every draw lies inside it."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(do_sample=True, max_new_tokens=1, return_dict_in_generate=True, output_scores=True,
                  **WARPERS[warpers])
    want = model.generate(ids, attention_mask=mask, **kwargs).scores[0]
    got = pydecode.generate(model, ids, attention_mask=mask, seed=3, **kwargs)
    assert torch.equal(torch.isinf(got.scores[0]), torch.isinf(want))
    assert bool((torch.isfinite(want).sum(-1) < VOCAB).all()), "the warpers remove nothing"
    torch.testing.assert_close(got.scores[0], want, rtol=1e-6, atol=1e-6)
    assert bool(torch.isfinite(want.gather(1, got.sequences[:, -1:])).all())


def test_sampling_draws_stay_inside_the_cutoffs_and_rows_take_their_own_values():
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    per_row = dict(eta_cutoff=torch.tensor([0.0, 0.05, 0.01]), top_h=torch.tensor([0.3, 0.0, 1.0]))
    out = pydecode.generate(model, ids, attention_mask=mask, do_sample=True, max_new_tokens=10, seed=5,
                            eos_token_id=None, return_dict_in_generate=True, output_scores=True, **per_row)
    new = out.sequences[:, ids.shape[1]:]
    for step, scores in enumerate(out.scores):
        assert bool(torch.isfinite(scores.gather(1, new[:, step:step + 1])).all())
    for row in range(3):
        alone = pydecode.generate(model, ids[row:row + 1], attention_mask=mask[row:row + 1], do_sample=True,
                                  max_new_tokens=10, seed=torch.tensor([5 + row]), eos_token_id=None,
                                  **{k: float(v[row]) for k, v in per_row.items()})
        assert alone[0].tolist() == out.sequences[row].tolist()


def _logits(batch, vocab, seed=0):
    logits = torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)) * 3
    logits[0, : vocab // 2] = float("-inf")  # a row with half its vocabulary already removed
    return logits


@pytest.mark.parametrize("vocab,batch", [(1000, 37), (49152, 3)])
def test_cutoff_filters_equal_transformers_warpers(vocab, batch):
    logits = _logits(batch, vocab)
    for value in (0.1, 0.5, 1.0):
        assert torch.equal(top_h_filter(logits, value), TopHLogitsWarper(value)(None, logits))
    for value in (1e-5, 3e-4, 0.2):
        for keep in (1, 3):
            assert torch.equal(epsilon_filter(logits, value, keep),
                               EpsilonLogitsWarper(value, min_tokens_to_keep=keep)(None, logits))
            assert torch.equal(eta_filter(logits, value, keep),
                               EtaLogitsWarper(value, min_tokens_to_keep=keep)(None, logits))


def test_cutoff_filters_take_per_row_values():
    logits = _logits(4, 500, seed=1)
    values = torch.tensor([0.0, 0.02, 0.3, 0.0])
    for fn in (top_h_filter, epsilon_filter, eta_filter):
        rows = torch.cat([fn(logits[r:r + 1], float(values[r])) for r in range(4)])
        assert torch.equal(fn(logits, values), rows)
        assert torch.equal(fn(logits, 0.0), logits)  # 0 is off


def test_beam_sampling_cutoffs_keep_one_more_token_than_the_eos_ids():
    """As transformers' warpers for beams: epsilon and eta keep len(eos) + 1 tokens, top-H none extra."""
    logits = torch.full((2, 50), -20.0)
    logits[:, 0] = 10.0
    scores = logits.log_softmax(-1)
    params = RowParams(
        temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, top_h=0.0, epsilon_cutoff=0.1, eta_cutoff=0.0,
        repetition_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, seeds=torch.zeros(2), do_sample=True)
    kept = torch.isfinite(warp_for_beams(scores, params, min_keep=3)).sum(-1)
    want = EpsilonLogitsWarper(0.1, min_tokens_to_keep=3)(None, scores)
    assert kept.tolist() == torch.isfinite(want).sum(-1).tolist() and int(kept[0]) > 1


BAD = {
    "sequence_bias": ([[[5, -1], 1.0]], ValueError),
    "sequence_bias_not_pairs": ([[5, 6]], ValueError),
    "sequence_bias_outside_vocab": ([[[VOCAB], 1.0]], ValueError),
    "encoder_repetition_penalty": (0.0, ValueError),
    "encoder_no_repeat_ngram_size": (-1, ValueError),
    "exponential_decay_length_penalty": ((2,), ValueError),
    "begin_suppress_tokens": ([VOCAB + 3], ValueError),
    "top_h": (1.5, ValueError),
    "epsilon_cutoff": (1.0, ValueError),
    "eta_cutoff": (-0.1, ValueError),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_settings_raise_naming_the_parameter(name):
    value, error = BAD[name]
    field = name.removesuffix("_not_pairs").removesuffix("_outside_vocab")
    ids, mask = padded_batch()
    with pytest.raises(error, match=field):
        pydecode.generate(tiny_model("llama"), ids, attention_mask=mask, max_new_tokens=2, do_sample=True,
                          **{field: value})


def test_exponential_decay_needs_an_eos_token():
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="exponential_decay_length_penalty needs an eos_token_id"):
        pydecode.generate(tiny_model("llama"), ids, attention_mask=mask, max_new_tokens=2, eos_token_id=None,
                          exponential_decay_length_penalty=(1, 1.5))


def test_low_memory_is_accepted_and_changes_nothing():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    contrastive = dict(attention_mask=mask, max_new_tokens=6, penalty_alpha=0.6, top_k=4)
    assert torch.equal(pydecode.generate(model, ids, low_memory=True, **contrastive),
                       pydecode.generate(model, ids, **contrastive))


NEGATIVE = dict(negative_prompt_ids=torch.tensor([[7, 8, 9]] * 3),
                negative_prompt_attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1], [0, 0, 1]]))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("negative", [False, True])
def test_classifier_free_guidance_matches_transformers(kind, negative):
    model = tiny_model(kind)
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=10, do_sample=False, guidance_scale=3.0, return_dict_in_generate=True,
                  output_scores=True, **(NEGATIVE if negative else {}))
    want = model.generate(ids, attention_mask=mask, **kwargs)
    plain = unprocessed(model, ids, mask, max_new_tokens=10)
    assert want.sequences[:, ids.shape[1]:].tolist() != plain.tolist(), "guidance changes nothing"
    assert_same_outputs(pydecode.generate(model, ids, attention_mask=mask, **kwargs), want)
    sampled = dict(kwargs, do_sample=True, temperature=0.8, top_k=20, max_new_tokens=1)
    first = model.generate(ids, attention_mask=mask, **sampled).scores[0]
    torch.testing.assert_close(pydecode.generate(model, ids, attention_mask=mask, **sampled).scores[0], first,
                               rtol=1e-5, atol=1e-5)


def test_classifier_free_guidance_when_finished_rows_leave_the_batch():
    model = tiny_model("llama")
    ids = torch.randint(6, VOCAB, (8, 5), generator=torch.Generator().manual_seed(4))
    negative_mask = torch.ones(8, 6, dtype=torch.long)
    negative_mask[::2, :5] = 0  # a negative prompt padded differently per row: the mask must follow its rows
    kwargs = dict(max_new_tokens=20, do_sample=False, guidance_scale=1.8, eos_token_id=list(range(5, 256, 4)),
                  pad_token_id=0, negative_prompt_ids=torch.randint(6, VOCAB, (8, 6)),
                  negative_prompt_attention_mask=negative_mask)
    want = model.generate(ids, **kwargs)
    got = pydecode.generate(model, ids, return_dict_in_generate=True, **kwargs)
    assert got.sequences.tolist() == want.tolist()
    assert got.host_syncs > got.sequences.shape[1] - ids.shape[1]  # the batch was compacted at least once


def test_classifier_free_guidance_refuses_other_strategies_and_bad_scales():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    with pytest.raises(NotImplementedError, match="guidance_scale"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, guidance_scale=2.0, num_beams=2)
    with pytest.raises(ValueError, match="guidance_scale"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, guidance_scale=float("nan"))


WATERMARKS = {
    "kgw_lefthash": lambda: WatermarkingConfig(bias=2.5),
    "kgw_selfhash": lambda: WatermarkingConfig(seeding_scheme="selfhash", context_width=2, bias=3.0),
    "synthid": lambda: SynthIDTextWatermarkingConfig(ngram_len=3, keys=[654, 400, 836, 123, 340]),
}


@pytest.mark.parametrize("watermark", list(WATERMARKS))
@pytest.mark.parametrize("strategy", [dict(do_sample=False), dict(num_beams=3, num_return_sequences=2),
                                      dict(do_sample=True, top_k=20, max_new_tokens=1)],
                         ids=["greedy", "beam", "sample"])
def test_watermarks_match_transformers(watermark, strategy):
    """transformers' own watermark processors, run after pydecode's warpers: the same tokens and scores (sampling:
    the first step's processed distribution, whose draw uses another random stream)."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=8, return_dict_in_generate=True, output_scores=True,
                  watermarking_config=WATERMARKS[watermark]())
    kwargs.update(strategy)
    want = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, seed=1, **kwargs)
    plain = pydecode.generate(model, ids, attention_mask=mask, seed=1, **dict(kwargs, watermarking_config=None))
    assert [s.tolist() for s in plain.scores] != [s.tolist() for s in want.scores], "the watermark changes nothing"
    if strategy.get("do_sample"):
        assert torch.equal(torch.isinf(got.scores[0]), torch.isinf(want.scores[0]))
        torch.testing.assert_close(got.scores[0], want.scores[0], rtol=1e-5, atol=1e-5)
        return
    assert_same_outputs(got, want)
    no_dict = dict(kwargs, return_dict_in_generate=False)
    assert pydecode.generate(model, ids, attention_mask=mask, **no_dict).tolist() == want.sequences.tolist()


def test_watermarks_refuse_other_strategies():
    ids, mask = padded_batch()
    with pytest.raises(NotImplementedError, match="watermarking_config"):
        pydecode.generate(tiny_model("llama"), ids, attention_mask=mask, max_new_tokens=2, penalty_alpha=0.5,
                          top_k=3, watermarking_config=WatermarkingConfig())


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
@pytest.mark.parametrize("strategy", [dict(do_sample=False), dict(num_beams=3, num_return_sequences=2)],
                         ids=["greedy", "beam"])
@pytest.mark.parametrize("chunk", [1, 4])
def test_chunked_prefill_matches_transformers(kind, strategy, chunk):
    """``prefill_chunk_size``: the prompt runs in forwards of ``chunk`` tokens (counted), with transformers' tokens
    and scores (gemma3: sliding-window layers of 4 tokens)."""
    model = tiny_model(kind)
    ids, mask = padded_batch(length=11)
    kwargs = dict(max_new_tokens=6, return_dict_in_generate=True, output_scores=True, prefill_chunk_size=chunk,
                  **strategy)
    want = model.generate(ids, attention_mask=mask, **kwargs)
    calls = []
    hook = model.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    finally:
        hook.remove()
    assert len(calls) == -(-11 // chunk) + len(got.scores) - 1
    assert_same_outputs(got, want)


def test_chunked_prefill_refuses_bad_sizes_and_other_strategies():
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="prefill_chunk_size"):
        pydecode.generate(tiny_model("llama"), ids, attention_mask=mask, max_new_tokens=2, prefill_chunk_size=0)
    with pytest.raises(NotImplementedError, match="prefill_chunk_size"):
        pydecode.generate(tiny_model("llama"), ids, attention_mask=mask, max_new_tokens=2, prefill_chunk_size=2,
                          penalty_alpha=0.5, top_k=3)
    from tests.generation.test_seq2seq import encoder_batch, seq2seq_model

    with pytest.raises(NotImplementedError, match="prefill_chunk_size"):
        pydecode.generate(seq2seq_model("t5"), *encoder_batch("t5"), max_new_tokens=2, prefill_chunk_size=2)


def test_exponential_decay_with_a_long_max_length_matches_transformers():
    """The eos growth factor is tabulated up to max_length: where Python's pow would overflow it is infinite."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(max_length=3000, exponential_decay_length_penalty=(0, 5.0), eos_token_id=[EOS], do_sample=False)
    want = model.generate(ids, attention_mask=mask, **kwargs)
    assert want.shape[1] < 20
    assert pydecode.generate(model, ids, attention_mask=mask, **kwargs).tolist() == want.tolist()
