"""Encoder-decoder models (tiny random T5 and BART): parity with transformers 5 generate (greedy, beam search),
transformers 4.55 golden outputs (diverse beam search, contrastive search), distributional checks (sampling, beam
sampling), attentions / hidden states in the output (encoder-decoder and decoder-only), the encoder running once, and
bad input."""
import copy
import functools

import pytest
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    BartConfig,
    BartForConditionalGeneration,
    T5Config,
    T5ForConditionalGeneration,
)

import pydecode
from pydecode.generation import strategies

from tests.fixtures.golden_v4 import case_ids, case_tensors, load_golden, model_path
from tests.generation.models import padded_batch, tiny_model

VOCAB = 128
REP = 1.3


@functools.lru_cache(maxsize=None)
def seq2seq_model(kind: str):
    """Tiny seeded T5 (pad 0 = decoder start, eos 1) or BART (bos 0, pad 1, eos 2 = decoder start), eager."""
    torch.manual_seed(0)
    if kind == "t5":
        config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                          num_decoder_layers=2, decoder_start_token_id=0, eos_token_id=1, pad_token_id=0,
                          initializer_factor=3.0)
        model = T5ForConditionalGeneration(config)
    elif kind == "bart":
        config = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
                            encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                            decoder_ffn_dim=64, max_position_embeddings=64, init_std=0.3)
        model = BartForConditionalGeneration(config)
    else:
        raise ValueError(kind)
    model.set_attn_implementation("eager")
    return model.eval()


def encoder_batch(kind: str, batch: int = 3, length: int = 7):
    """Random encoder inputs, right-padded by 0, 3 and 1 tokens on the first rows (with their attention mask)."""
    pad = seq2seq_model(kind).config.pad_token_id
    ids = torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    for row, n in enumerate([0, 3, 1][:batch]):
        if n:
            ids[row, -n:], mask[row, -n:] = pad, 0
    return ids, mask


@functools.lru_cache(maxsize=None)
def frequent_token(kind: str) -> int:
    """A token greedy decoding emits mid-way in the last row (used as eos so that rows finish at different steps)."""
    ids, mask = encoder_batch(kind)
    out = seq2seq_model(kind).generate(ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None,
                                       forced_eos_token_id=None, repetition_penalty=REP)
    return int(out[-1, 4])


def _compare(kind, kwargs, ids=None, mask=None, beams=False):
    model = seq2seq_model(kind)
    if ids is None:
        ids, mask = encoder_batch(kind)
    kwargs = dict(kwargs, return_dict_in_generate=True, output_scores=True, output_logits=True)
    want = model.generate(ids, attention_mask=mask, **kwargs)
    got = pydecode.generate(model, ids, attention_mask=mask, **kwargs)
    assert got.sequences.tolist() == want.sequences.tolist()
    assert len(got.scores) == len(want.scores)
    for a, b in zip(got.scores, want.scores):  # float32 sums over a few steps: 1e-4, not bit for bit
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    if beams:
        torch.testing.assert_close(got.sequences_scores, want.sequences_scores, atol=1e-4, rtol=1e-4)
        assert got.beam_indices.tolist() == want.beam_indices.tolist()
    plain = pydecode.generate(model, ids, attention_mask=mask, **dict(kwargs, return_dict_in_generate=False))
    assert plain.tolist() == want.sequences.tolist()  # no per-step outputs: finished rows are dropped
    return got


GREEDY = {  # tiny random models repeat themselves: the repetition penalty makes the sequences vary
    "default": dict(max_new_tokens=10),
    "eos": dict(max_new_tokens=10, eos_token_id="frequent", repetition_penalty=REP),
    "eos_list_min_new": dict(max_new_tokens=10, eos_token_id=["frequent", 5], min_new_tokens=4,
                             repetition_penalty=REP),
    "min_length": dict(max_new_tokens=10, eos_token_id="frequent", min_length=5, repetition_penalty=REP),
    "penalties": dict(max_new_tokens=10, repetition_penalty=1.5, no_repeat_ngram_size=2),
    "max_length": dict(max_length=7),
    "forced_bos_eos": dict(max_new_tokens=8, forced_bos_token_id=7, forced_eos_token_id=9),
    "encoder_processors": dict(max_new_tokens=10, encoder_repetition_penalty=2.5, encoder_no_repeat_ngram_size=2,
                               repetition_penalty=REP),
    "return_sequences": dict(max_new_tokens=10, do_sample=True, top_k=1, num_return_sequences=3,
                             eos_token_id="frequent", repetition_penalty=REP),
}


def _resolve(kind, kwargs):
    """Replace the "frequent" placeholder eos by :func:`frequent_token`."""
    eos = kwargs.get("eos_token_id")

    def swap(t):
        return frequent_token(kind) if t == "frequent" else t

    if isinstance(eos, list):
        return dict(kwargs, eos_token_id=[swap(t) for t in eos])
    return dict(kwargs, eos_token_id=swap(eos)) if eos is not None else kwargs


@pytest.mark.parametrize("kind", ["t5", "bart"])
@pytest.mark.parametrize("case", sorted(GREEDY))
def test_greedy_matches_transformers(kind, case):
    _compare(kind, _resolve(kind, GREEDY[case]))


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_user_decoder_input_ids_and_unmasked_encoder(kind):
    """decoder_input_ids without the start token get it prepended; no encoder mask is inferred from pad tokens."""
    ids, _ = encoder_batch(kind)
    decoder_ids = torch.randint(3, VOCAB, (3, 2), generator=torch.Generator().manual_seed(2))
    got = _compare(kind, dict(max_new_tokens=6, decoder_input_ids=decoder_ids), ids, None)
    assert got.sequences[:, 1:3].tolist() == decoder_ids.tolist()


def _allowed_topk(kind, ids, mask, out, k, start):
    """(rows, steps) bool: each generated token lies in the top-k of the model's distribution after its prefix."""
    model = seq2seq_model(kind)
    rows = out.shape[0] // ids.shape[0]
    logits = model(input_ids=ids.repeat_interleave(rows, 0), attention_mask=mask.repeat_interleave(rows, 0),
                   decoder_input_ids=out).logits
    allowed = logits[:, start - 1: -1].topk(k, dim=-1).indices
    return (allowed == out[:, start:, None]).any(-1)


SAMPLING = dict(do_sample=True, top_k=4, temperature=0.9, max_new_tokens=8, eos_token_id=None,
                forced_eos_token_id=None)


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_sampling_draws_are_allowed_and_seeded(kind):
    ids, mask = encoder_batch(kind)
    model = seq2seq_model(kind)
    out = pydecode.generate(model, ids, attention_mask=mask, seed=3, num_return_sequences=2, **SAMPLING)
    again = pydecode.generate(model, ids, attention_mask=mask, seed=3, num_return_sequences=2, **SAMPLING)
    others = {tuple(pydecode.generate(model, ids, attention_mask=mask, seed=s, **SAMPLING).flatten().tolist())
              for s in range(4)}
    assert out.tolist() == again.tolist() and len(others) > 1
    assert bool(_allowed_topk(kind, ids, mask, out, SAMPLING["top_k"], 1).all())


def _beam_available():
    try:
        strategies.load("beam")
    except (ImportError, NotImplementedError) as err:
        return str(err)
    return None


needs_beam = pytest.mark.skipif(_beam_available() is not None,
                                reason=f"beam strategy not available: {_beam_available()}")
BEAMS = {
    "default": dict(num_beams=4, max_new_tokens=8),
    "eos_r2_early": dict(num_beams=3, max_new_tokens=8, eos_token_id="frequent", num_return_sequences=2,
                         early_stopping=True, length_penalty=0.5),
    "encoder_processors": dict(num_beams=3, max_new_tokens=8, encoder_repetition_penalty=0.5,
                               encoder_no_repeat_ngram_size=1),
    "never_lp2_penalties": dict(num_beams=4, max_new_tokens=8, eos_token_id=["frequent", 5], early_stopping="never",
                                length_penalty=2.0, repetition_penalty=1.3, min_new_tokens=3, num_return_sequences=4),
}


@needs_beam
@pytest.mark.parametrize("kind", ["t5", "bart"])
@pytest.mark.parametrize("case", sorted(BEAMS))
def test_beam_search_matches_transformers(kind, case):
    _compare(kind, _resolve(kind, BEAMS[case]), beams=True)


@needs_beam
@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_beam_sampling_draws_are_allowed_and_seeded(kind):
    ids, mask = encoder_batch(kind)
    model = seq2seq_model(kind)
    kwargs = dict(SAMPLING, num_beams=3, num_return_sequences=2)
    out = pydecode.generate(model, ids, attention_mask=mask, seed=5, **kwargs)
    assert out.tolist() == pydecode.generate(model, ids, attention_mask=mask, seed=5, **kwargs).tolist()
    assert bool(_allowed_topk(kind, ids, mask, out, SAMPLING["top_k"], 1).all())


GROUP_CASES = [c for c in load_golden("group_beam") if c["is_encoder_decoder"]]


@functools.lru_cache(maxsize=None)
def _golden_model(name):
    return AutoModelForSeq2SeqLM.from_pretrained(model_path(name), attn_implementation="eager").eval()


@needs_beam
@pytest.mark.parametrize("case", GROUP_CASES, ids=case_ids(GROUP_CASES))
def test_diverse_beam_search_matches_golden(case):
    out = pydecode.generate(_golden_model(case["model"]), **case_tensors(case), **case["generate_kwargs"])
    assert out.sequences.tolist() == case["sequences"]
    assert out.beam_indices.tolist() == case["beam_indices"]
    torch.testing.assert_close(out.sequences_scores, torch.tensor(case["sequences_scores"]), atol=1e-4, rtol=1e-5)


OUTPUTS = dict(return_dict_in_generate=True, output_attentions=True, output_hidden_states=True, output_scores=True,
               max_new_tokens=6, eos_token_id=None, forced_eos_token_id=None)
SEQ2SEQ_FIELDS = ("encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
                  "decoder_hidden_states")


def _assert_same_outputs(got, want, fields):
    assert got.sequences.tolist() == want.sequences.tolist()
    for name in fields:
        a, b = getattr(got, name), getattr(want, name)
        assert a is not None and b is not None, name
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")  # noqa: B023


@pytest.mark.parametrize("kind", ["t5", "bart"])
@pytest.mark.parametrize("extra", [{}, dict(num_beams=3, num_return_sequences=2)], ids=["greedy", "beams"])
def test_encoder_decoder_attentions_and_hidden_states(kind, extra):
    if extra and _beam_available():
        pytest.skip(f"beam strategy not available: {_beam_available()}")
    model = seq2seq_model(kind)
    ids, mask = encoder_batch(kind)
    want = model.generate(ids, attention_mask=mask, **OUTPUTS, **extra)
    got = pydecode.generate(model, ids, attention_mask=mask, **OUTPUTS, **extra)
    assert type(got).__name__ == ("Seq2SeqBeamOutput" if extra else "Seq2SeqGenerateOutput")
    assert isinstance(got, type(want))  # a subclass of transformers' encoder-decoder output
    _assert_same_outputs(got, want, SEQ2SEQ_FIELDS)


@functools.lru_cache(maxsize=None)
def eager_llama():
    model = copy.deepcopy(tiny_model("llama"))
    model.set_attn_implementation("eager")
    return model


@pytest.mark.parametrize("extra", [{}, dict(num_beams=3)], ids=["greedy", "beams"])
def test_decoder_only_attentions_and_hidden_states(extra):
    if extra and _beam_available():
        pytest.skip(f"beam strategy not available: {_beam_available()}")
    ids, mask = padded_batch()
    model = eager_llama()
    want = model.generate(ids, attention_mask=mask, **OUTPUTS, **extra)
    got = pydecode.generate(model, ids, attention_mask=mask, **OUTPUTS, **extra)
    _assert_same_outputs(got, want, ("attentions", "hidden_states"))


@pytest.mark.parametrize("num_beams", [1, 4])
def test_encoder_and_cross_attention_run_once_per_prompt(num_beams):
    """One encoder forward on the un-expanded batch; the cross-attention keys are projected once, per prompt."""
    if num_beams > 1 and _beam_available():
        pytest.skip(f"beam strategy not available: {_beam_available()}")
    model = seq2seq_model("bart")
    ids, mask = encoder_batch("bart")
    encoder_rows, cross_rows = [], []
    hooks = [model.get_encoder().register_forward_hook(lambda m, a, k, o: encoder_rows.append(k["input_ids"].shape[0]),
                                                       with_kwargs=True),
             model.model.decoder.layers[0].encoder_attn.k_proj.register_forward_hook(
                 lambda m, a, o: cross_rows.append(a[0].shape[0]))]
    try:
        pydecode.generate(model, ids, attention_mask=mask, num_beams=num_beams, num_return_sequences=2,
                          do_sample=num_beams == 1, top_k=1, max_new_tokens=5, eos_token_id=None)
    finally:
        for hook in hooks:
            hook.remove()
    assert encoder_rows == [ids.shape[0]]
    assert cross_rows == [ids.shape[0]]


def test_bad_input_raises_clear_errors():
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="decoder_input_ids"):
        pydecode.generate(tiny_model("llama"), ids, attention_mask=mask, max_new_tokens=2,
                          decoder_input_ids=ids[:, :1])
    model = seq2seq_model("t5")
    enc, enc_mask = encoder_batch("t5")
    no_start = copy.deepcopy(model)
    no_start.generation_config.decoder_start_token_id = no_start.generation_config.bos_token_id = None
    with pytest.raises(ValueError, match="decoder_start_token_id"):
        pydecode.generate(no_start, enc, attention_mask=enc_mask, max_new_tokens=2)
    with pytest.raises(ValueError, match="decoder_input_ids"):
        pydecode.generate(model, enc, attention_mask=enc_mask, max_new_tokens=2, decoder_input_ids=enc[:2, :1])
    with pytest.raises(NotImplementedError, match="encoder-decoder"):
        pydecode.generate(model, enc, attention_mask=enc_mask, max_new_tokens=2, prompt_lookup_num_tokens=2)


CONTRASTIVE_CASES = load_golden("contrastive_seq2seq")


@pytest.mark.parametrize("case", CONTRASTIVE_CASES, ids=case_ids(CONTRASTIVE_CASES))
def test_contrastive_search_matches_golden(case):
    """Contrastive search on T5 / BART (candidates over a K-times repeated cache): token for token against 4.55.4."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the goldens were recorded single-threaded
    try:
        out = pydecode.generate(_golden_model(case["model"]), **case_tensors(case), **case["generate_kwargs"])
    finally:
        torch.set_num_threads(threads)
    assert out.sequences.tolist() == case["sequences"], case["id"]
    assert len(out.scores) == len(case["sequences"][0]) - 1
    top = torch.stack(out.scores, 1).topk(case["scores_topk"]["k"], dim=-1).values
    want = torch.tensor(case["scores_topk"]["values"]).transpose(0, 1)
    torch.testing.assert_close(top, want, rtol=1e-4, atol=1e-4)
