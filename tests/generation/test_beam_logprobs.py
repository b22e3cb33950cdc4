"""Logprobs from beam search and beam sampling: each returned hypothesis' tokens under the raw distribution of the
beam that chose them (checked against a teacher-forced forward over the finished sequences), the processed ones,
the top alternatives, and their sum against ``sequences_scores``."""
import pytest
import torch

import pydecode

from tests.generation.models import EOS, padded_batch, tiny_model

EOS_LIST = [EOS, 9, 17, 33, 44, 55, 66, 77, 88, 99]


def teacher_forced(model, sequences, mask, prompt_len):
    """(R, T, V) log-softmax of the model at each generated position of ``sequences``, prompt mask repeated."""
    full_mask = torch.cat([mask, torch.ones(mask.shape[0], sequences.shape[1] - prompt_len, dtype=mask.dtype)], 1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(sequences, attention_mask=full_mask, position_ids=positions).logits
    return logits[:, prompt_len - 1: -1].float().log_softmax(-1)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("strategy", [dict(num_beams=4, num_return_sequences=3, eos_token_id=EOS_LIST),
                                      dict(num_beams=3, do_sample=True, top_k=10, temperature=0.8, seed=2),
                                      dict(num_beams=3, repetition_penalty=1.6, no_repeat_ngram_size=2)],
                         ids=["search", "sampling", "processed"])
def test_beam_logprobs_equal_a_teacher_forced_forward(kind, strategy):
    model = tiny_model(kind)
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=9, return_dict_in_generate=True,
                            output_scores=True, top_logprobs=3, **strategy)
    returned = out.sequences.shape[0] // ids.shape[0]
    generated = out.sequences[:, ids.shape[1]:]
    live = out.beam_indices >= 0  # the hypothesis' own tokens (a finished one is padded after its eos)
    assert out.logprobs.shape == out.processed_logprobs.shape == generated.shape
    assert out.top_logprobs.shape == out.top_logprob_ids.shape == (*generated.shape, 3)
    want = teacher_forced(model, out.sequences, mask.repeat_interleave(returned, 0), ids.shape[1])
    chosen = want.gather(-1, generated[..., None])[..., 0]
    torch.testing.assert_close(out.logprobs[live], chosen[live], rtol=1e-4, atol=1e-4)
    top = want.topk(3, dim=-1)
    torch.testing.assert_close(out.top_logprobs[live], top.values[live], rtol=1e-4, atol=1e-4)
    assert bool((out.top_logprob_ids[live][:, 0] == top.indices[live][:, 0]).all())
    assert bool((out.logprobs[~live] == 0).all()) and bool((out.top_logprob_ids[~live] == 0).all())
    changed = not torch.allclose(out.processed_logprobs[live], out.logprobs[live], atol=1e-4)
    assert changed == ("repetition_penalty" in strategy or "temperature" in strategy)


def test_beam_logprobs_sum_to_the_sequence_scores():
    """Plain beam search scores a hypothesis by its summed logprobs over its length ** length_penalty."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=8, num_beams=4, num_return_sequences=2,
                            length_penalty=0.5, eos_token_id=list(range(5, 256, 4)), return_dict_in_generate=True,
                            output_scores=True, output_logprobs=True)
    lengths = (out.beam_indices >= 0).sum(1)
    assert len(set(lengths.tolist())) > 1, "every hypothesis has the same length: the test checks less"
    torch.testing.assert_close(out.logprobs.sum(1) / lengths ** 0.5, out.sequences_scores, rtol=1e-5, atol=1e-5)
    assert out.top_logprobs is None


def test_diverse_beam_search_logprobs_equal_a_teacher_forced_forward():
    """Diverse beam search: the raw logprobs of each returned hypothesis (eos-closed ones too: a single eos id, as
    transformers 4.x closes a hypothesis with the first one), and the processed ones (diversity penalty included)."""
    model = tiny_model("llama")
    ids, mask = padded_batch()
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=8, num_beams=4, num_beam_groups=2,
                            diversity_penalty=1.5, num_return_sequences=2, eos_token_id=130,
                            return_dict_in_generate=True, output_scores=True, top_logprobs=2)
    generated = out.sequences[:, ids.shape[1]:]
    closed = generated == 130
    lengths = torch.where(closed.any(1), closed.int().argmax(1) + 1, generated.shape[1])  # up to the eos, included
    assert len(set(lengths.tolist())) > 1, "every hypothesis has the same length: the test checks less"
    live = torch.arange(generated.shape[1]) < lengths[:, None]
    want = teacher_forced(model, out.sequences, mask.repeat_interleave(2, 0), ids.shape[1])
    chosen = want.gather(-1, generated[..., None])[..., 0]
    torch.testing.assert_close(out.logprobs[live], chosen[live], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.top_logprobs[live], want.topk(2, dim=-1).values[live], rtol=1e-4, atol=1e-4)
    assert bool((out.processed_logprobs[~live] == 0).all())
    assert not torch.allclose(out.processed_logprobs[live], out.logprobs[live], atol=1e-3)


def test_encoder_decoder_beam_processed_logprobs_sum_to_the_sequence_scores():
    from tests.generation.test_seq2seq import encoder_batch, seq2seq_model

    model = seq2seq_model("bart")
    ids, mask = encoder_batch("bart")
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=6, num_beams=3, length_penalty=1.0,
                            return_dict_in_generate=True, output_scores=True, output_logprobs=True)
    lengths = (out.beam_indices >= 0).sum(1)
    assert out.logprobs.shape == out.beam_indices.shape
    # this BART forces eos at the last position: the scores sum the processed logprobs, not the raw ones
    torch.testing.assert_close(out.processed_logprobs.sum(1) / lengths, out.sequences_scores, rtol=1e-5, atol=1e-5)
    assert bool((out.logprobs.sum(1) < out.processed_logprobs.sum(1) - 0.1).all())
