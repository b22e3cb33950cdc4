"""pydecode.LLM: strings in, completions out, the same tokens as pydecode.generate; a tiny random Llama over the byte
tokenizer (one token per UTF-8 byte, eos 256), and the real SmolLM2 behind ``real_model``."""
import functools

import pytest
import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

import pydecode
from pydecode import LLM
from pydecode.completion import to_generate_kwargs
from pydecode.random_models import EOS_ID, byte_tokenizer
from pydecode.text_stream import StopTextTracker

NOT_PRINTABLE = [i for i in range(256) if not 32 <= i < 127]  # keeps the random model's text printable ASCII
PROMPTS = ["Hello there", "A", "The quick brown fox"]
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


@functools.lru_cache(maxsize=None)
def tiny_llm() -> LLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=EOS_ID + 1, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         eos_token_id=EOS_ID, pad_token_id=EOS_ID, bos_token_id=None)
    tokenizer = byte_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return LLM(LlamaForCausalLM(config).eval(), tokenizer)


def reference(llm, prompts, **kwargs):
    """pydecode.generate's new tokens for ``prompts``, left-padded by the tokenizer."""
    batch = llm.tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    sequences = pydecode.generate(llm.model, **batch, tokenizer=llm.tokenizer, **kwargs)
    return sequences[:, batch["input_ids"].shape[1]:].tolist()


STRATEGIES = {
    "greedy": dict(do_sample=False),
    "sampling": dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=7, num_return_sequences=2),
    "beam": dict(num_beams=3, num_return_sequences=2, do_sample=False),
    "contrastive": dict(penalty_alpha=0.6, top_k=4),
    "prompt_lookup": dict(prompt_lookup_num_tokens=3, do_sample=False),
    "penalties": dict(do_sample=True, frequency_penalty=0.5, presence_penalty=0.3, repetition_penalty=1.2, seed=1),
}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_complete_gives_generates_tokens(strategy):
    llm = tiny_llm()
    kwargs = dict(STRATEGIES[strategy], max_new_tokens=12)
    expected = reference(llm, PROMPTS, **kwargs)
    got = llm.complete(PROMPTS, **kwargs)
    n = kwargs.get("num_return_sequences", 1)
    assert len(got) == len(expected) == len(PROMPTS) * n
    for row, (completion, tokens) in enumerate(zip(got, expected)):
        length = len(completion.token_ids)
        assert completion.token_ids == tokens[:length]
        assert all(token == EOS_ID for token in tokens[length:])  # only padding after the row finished
        assert (completion.prompt_index, completion.index) == (row // n, row % n)
        assert completion.text == llm.tokenizer.decode(completion.token_ids, skip_special_tokens=True)


def test_hosted_names_and_params_objects_agree():
    llm = tiny_llm()
    params = pydecode.SamplingParams(max_tokens=6, n=2, temperature=0.7, top_k=30, seed=3)
    expected = reference(llm, PROMPTS, **params.to_generate_kwargs())
    got = llm.complete(PROMPTS, params)
    assert [c.token_ids for c in got] == [row[:len(c.token_ids)] for c, row in zip(got, expected)]
    ours = llm.complete(PROMPTS, max_new_tokens=6, num_return_sequences=2, do_sample=True, seed=3)
    hosted = llm.complete(PROMPTS, max_tokens=6, n=2, do_sample=True, seed=3)
    as_dict = llm.complete(PROMPTS, {"max_tokens": 6, "n": 2, "do_sample": True, "seed": 3})
    config = llm.complete(PROMPTS, pydecode.GenerationConfig(max_new_tokens=6, num_return_sequences=2,
                                                             do_sample=True, seed=3))
    for other in (hosted, as_dict, config):
        assert [c.token_ids for c in other] == [c.token_ids for c in ours]
    assert len(ours) == 6 and all(len(c.token_ids) == 6 and c.finish_reason == "length" for c in ours)
    assert ours[0].usage == {"prompt_tokens": len(PROMPTS[0]), "completion_tokens": 6,
                             "total_tokens": len(PROMPTS[0]) + 6}
    assert ours[0].seconds > 0
    assert len(llm.complete(PROMPTS[2])[0].token_ids) == 20  # the README's default: the model's 20 new tokens


def test_same_setting_under_both_names_is_refused():
    with pytest.raises(ValueError, match="two names of 'max_new_tokens'"):
        to_generate_kwargs({"max_new_tokens": 3, "max_tokens": 4})
    with pytest.raises(ValueError, match="top_logprobs must be an integer >= 0"):
        to_generate_kwargs({"logprobs": -1})
    assert to_generate_kwargs({"stop": "x", "logit_bias": {7: -1}, "num_beams": 2}) == {
        "stop_strings": ["x"], "sequence_bias": [[[7], -1.0]], "num_beams": 2}
    assert to_generate_kwargs({"max_new_tokens": 3}) == {"max_new_tokens": 3}  # no hosted name: unchanged


def test_stop_string_excluded_and_finish_reasons():
    llm = tiny_llm()
    plain = llm.complete(PROMPTS[0], max_tokens=16, suppress_tokens=NOT_PRINTABLE)[0]
    assert plain.finish_reason == "length" and len(plain.text) == 16 and plain.stop is None
    stop = plain.text[5:7]
    cut = plain.text.find(stop)
    stopped = llm.complete(PROMPTS[0], max_tokens=16, stop=[stop, "never seen"], suppress_tokens=NOT_PRINTABLE)[0]
    assert (stopped.text, stopped.finish_reason, stopped.stop) == (plain.text[:cut], "stop", stop)
    assert stopped.token_ids == plain.token_ids[:cut + len(stop)]  # up to the token that completed the stop string
    eos = llm.complete(PROMPTS[0], max_tokens=16, logit_bias={EOS_ID: 100.0})[0]
    assert (eos.token_ids, eos.text, eos.finish_reason, eos.stop) == ([EOS_ID], "", "stop", None)


def test_logprobs_are_decoded_and_match_generate():
    llm = tiny_llm()
    got = llm.complete(PROMPTS[:2], max_tokens=5, logprobs=3, suppress_tokens=NOT_PRINTABLE)
    batch = llm.tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, padding_side="left")
    out = pydecode.generate(llm.model, **batch, max_new_tokens=5, output_logprobs=True, top_logprobs=3,
                            return_dict_in_generate=True, suppress_tokens=NOT_PRINTABLE)
    for row, completion in enumerate(got):
        assert len(completion.logprobs) == 5
        for t, entry in enumerate(completion.logprobs):
            assert entry.token == chr(entry.token_id) and entry.token_id == completion.token_ids[t]
            assert entry.logprob == pytest.approx(out.logprobs[row, t].item())
            assert [alt_id for _, alt_id, _ in entry.top] == out.top_logprob_ids[row, t].tolist()
            decoded = [llm.tokenizer.decode([i]) for i in out.top_logprob_ids[row, t].tolist()]
            assert [text for text, _, _ in entry.top] == decoded  # the raw distribution's, printable or not
        choice = completion.to_choice()
        assert choice["logprobs"]["tokens"] == list(completion.text)
        assert len(choice["logprobs"]["top_logprobs"][0]) == 3
    assert llm.complete(PROMPTS[0], max_tokens=2)[0].logprobs is None


def test_stream_pieces_join_into_the_completion():
    llm = tiny_llm()
    for kwargs in (dict(max_tokens=20), dict(max_tokens=20, suppress_tokens=NOT_PRINTABLE),
                   dict(max_tokens=20, do_sample=True, seed=5)):
        text = llm.complete(PROMPTS[2], **kwargs)[0].text
        pieces = list(llm.stream(PROMPTS[2], **kwargs))
        assert "".join(pieces) == text and len(pieces) > 1
    plain = llm.complete(PROMPTS[2], max_tokens=20, suppress_tokens=NOT_PRINTABLE)[0].text
    stop = plain[8:11]
    pieces = list(llm.stream(PROMPTS[2], max_tokens=20, stop=stop, suppress_tokens=NOT_PRINTABLE))
    assert "".join(pieces) == plain[:plain.find(stop)]


def test_stream_early_close_stops_the_worker():
    stream = tiny_llm().stream(PROMPTS[0], max_tokens=400)
    next(stream)
    stream.close()  # joins the worker, which stops at its next step


def test_stop_text_tracker_whole_characters_and_held_back_stop():
    tracker = StopTextTracker(byte_tokenizer(), ["END"])
    pieces = [tracker.add([byte]) for byte in "hé€ E".encode()]
    assert pieces == ["h", "", "é", "", "", "€", " ", ""]  # "E" may begin "END": held back
    assert tracker.add(list(b"X")) == "EX" and tracker.add(list(b"ENDmore")) == "" and tracker.stopped
    assert tracker.finish() == ""


def test_chat_applies_the_template():
    llm = tiny_llm()
    messages = [{"role": "user", "content": "hi"}]
    got = llm.chat(messages, max_tokens=4)
    assert got[0].prompt_tokens == len("<user>hi\n<assistant>")
    assert got[0].token_ids == llm.complete("<user>hi\n<assistant>", max_tokens=4)[0].token_ids
    assert len(llm.chat([messages, messages], max_tokens=2)) == 2
    assert "".join(llm.stream(messages, max_tokens=4)) == got[0].text


def test_generate_texts_with_transformers_config():
    llm = tiny_llm()
    config = transformers.GenerationConfig(max_new_tokens=5, do_sample=False)
    texts = llm.generate(texts=PROMPTS, generation_config=config)
    assert texts == [c.text for c in llm.complete(PROMPTS, max_new_tokens=5, do_sample=False)]
    assert llm.generate(texts=PROMPTS[0], generation_config=config) == texts[0]
    pairs = llm.generate(texts=PROMPTS[:2], max_new_tokens=3, do_sample=True, seed=1, num_return_sequences=2)
    assert len(pairs) == 2 and all(len(pair) == 2 for pair in pairs)


def test_bad_inputs():
    llm = tiny_llm()
    with pytest.raises(TypeError, match="tokenizer is required"):
        LLM(llm.model)
    with pytest.raises(ValueError, match="backend must be one of"):
        LLM(llm.model, llm.tokenizer, backend="numpy")
    with pytest.raises(TypeError, match="each prompt must be a string"):
        llm.complete([1, 2])
    with pytest.raises(ValueError, match="temperature"):
        llm.complete("x", temperature=-1.0, do_sample=True)
    with pytest.raises(ValueError, match="n / num_return_sequences must be 1"):
        list(llm.stream("x", n=2, do_sample=True))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use device='cpu'"):
            LLM(llm.model, llm.tokenizer, device="cuda")


@pytest.mark.real_model
def test_smollm2_complete_chat_and_stream(smollm2_converted):
    llm = LLM("smollm2", device="cpu")
    prompts = ["The capital of France is", "Once upon a time"]
    got = llm.complete(prompts, max_tokens=8)
    batch = llm.tokenizer(prompts, return_tensors="pt", padding=True)
    expected = pydecode.generate(llm.model, **batch, max_new_tokens=8)[:, batch["input_ids"].shape[1]:]
    assert [c.token_ids for c in got] == [row[:len(c.token_ids)] for c, row in zip(got, expected.tolist())]
    assert "Paris" in got[0].text
    answer = llm.chat([{"role": "user", "content": "What is the capital of France?"}], max_tokens=12)[0]
    assert "Paris" in answer.text and "<|im_start|>" not in answer.text
    assert "".join(llm.stream(prompts[1], max_tokens=8)) == got[1].text
