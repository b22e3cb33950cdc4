"""``prefix_allowed_tokens_fn``: token and score parity with transformers 5 through greedy decoding, sampling (the
first step's distribution), beam search, finished rows leaving the batch, and the speculative strategies (which
must emit plain decoding's tokens); the unsatisfiable-constraint rule; bad input."""
import pytest
import torch

import pydecode

from tests.generation.models import padded_batch, tiny_model


def allowed(prompt, tokens):
    """12 ids that depend on the prompt's index and the last token."""
    return [(int(tokens[-1]) * 7 + 3 * k + prompt) % 256 for k in range(12)]


STRATEGIES = {
    "greedy": dict(do_sample=False),
    "beam": dict(num_beams=3, num_return_sequences=2, do_sample=False),
    "sample": dict(do_sample=True, num_return_sequences=2, max_new_tokens=1),
    "invalid_values_forced_eos": dict(do_sample=False, remove_invalid_values=True, forced_eos_token_id=5),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_prefix_constraint_matches_transformers(strategy):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=6, return_dict_in_generate=True, output_scores=True, prefix_allowed_tokens_fn=allowed)
    kwargs.update(STRATEGIES[strategy])
    want = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    free = pydecode.generate(model, ids, attention_mask=mask, **dict(kwargs, prefix_allowed_tokens_fn=None))
    assert not torch.equal(free.scores[0], want.scores[0]), "the constraint changes nothing"
    for ours, theirs in zip(got.scores, want.scores, strict=True):
        assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    if not kwargs["do_sample"]:
        assert got.sequences.tolist() == want.sequences.tolist()


def test_prefix_constraint_follows_rows_that_leave_the_batch():
    """Rows end at scattered steps and leave the batch: each keeps its prompt's index for the function."""
    model = tiny_model("llama")
    ids = torch.randint(6, 256, (8, 5), generator=torch.Generator().manual_seed(4))
    def ends_by_prompt(prompt, tokens):  # prompt p may only say its own eos from its (p + 2)-th new token on
        if len(tokens) >= 6 + prompt:
            return [5 + 4 * prompt]
        return [(prompt * 31 + k * 4 + 2) % 256 for k in range(40)]

    kwargs = dict(max_new_tokens=12, do_sample=False, eos_token_id=list(range(5, 256, 4)), pad_token_id=0,
                  prefix_allowed_tokens_fn=ends_by_prompt)
    want = model.generate(ids, **kwargs)
    got = pydecode.generate(model, ids, return_dict_in_generate=True, **kwargs)
    assert got.sequences.tolist() == want.tolist()
    assert got.host_syncs > got.sequences.shape[1] - ids.shape[1]  # the batch was compacted


@pytest.mark.parametrize("spec", [dict(prompt_lookup_num_tokens=3), dict(num_assistant_tokens=3)],
                         ids=["lookup", "self_draft"])
def test_speculative_strategies_keep_the_constraint(spec):
    model = tiny_model("llama")
    ids, mask = padded_batch()
    if "num_assistant_tokens" in spec:
        spec = dict(spec, assistant_model=model)
    kwargs = dict(max_new_tokens=8, do_sample=False, prefix_allowed_tokens_fn=allowed)
    plain = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert plain.tolist() == model.generate(ids, attention_mask=mask, **kwargs).tolist()
    assert pydecode.generate(model, ids, attention_mask=mask, **kwargs, **spec).tolist() == plain.tolist()


def test_unsatisfiable_constraint_keeps_its_tokens_as_transformers_does():
    """The only allowed tokens are banned by an earlier processor: they come back at score 0."""
    model = tiny_model("gpt2")
    ids, mask = padded_batch()
    kwargs = dict(max_new_tokens=3, do_sample=False, bad_words_ids=[[7], [8]], return_dict_in_generate=True,
                  output_scores=True, prefix_allowed_tokens_fn=lambda prompt, tokens: [7, 8] if prompt else [9])
    want = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert got.sequences[1:, ids.shape[1]:].unique().tolist() == [7]
    assert got.sequences.tolist() == want.sequences.tolist()
    for ours, theirs in zip(got.scores, want.scores, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_empty_or_uncallable_constraint_raises():
    model = tiny_model("llama")
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="no allowed token"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, prefix_allowed_tokens_fn=lambda b, s: [])
    with pytest.raises(TypeError, match="callable"):
        pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=2, prefix_allowed_tokens_fn=[1, 2])


@pytest.mark.parametrize("kind", ["t5", "bart"])
@pytest.mark.parametrize("beams", [1, 3])
def test_prefix_constraint_on_encoder_decoder_models(kind, beams):
    """The function sees the decoder's tokens."""
    from tests.generation.test_seq2seq import encoder_batch, seq2seq_model

    model = seq2seq_model(kind)
    ids, mask = encoder_batch(kind)
    kwargs = dict(max_new_tokens=6, num_beams=beams, do_sample=False,
                  prefix_allowed_tokens_fn=lambda prompt, tokens: [(int(tokens[-1]) * 7 + 3 * k + prompt) % 100
                                                                   for k in range(12)])
    assert pydecode.generate(model, ids, attention_mask=mask, **kwargs).tolist() == \
        model.generate(ids, attention_mask=mask, **kwargs).tolist()


@pytest.mark.parametrize("strategy", [dict(penalty_alpha=0.6, top_k=4), dict(dola_layers="low"),
                                      dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0,
                                           num_return_sequences=2)],
                         ids=["contrastive", "dola", "diverse_beam"])
def test_strategies_without_a_transformers_5_reference_obey_the_constraint(strategy):
    """Contrastive search, DoLa and diverse beam search (on the Hub in transformers 5): every new token is one the
    function allowed after the tokens before it."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                            prefix_allowed_tokens_fn=allowed, **strategy)
    free = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=6, do_sample=False, **strategy)
    assert out.tolist() != free.tolist()
    per_prompt = out.shape[0] // ids.shape[0]
    for row, tokens in enumerate(out):
        for at in range(ids.shape[1], out.shape[1]):
            assert int(tokens[at]) in allowed(row // per_prompt, tokens[:at])
