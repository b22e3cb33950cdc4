"""Offline vLLM runs for test_vllm.py, executed by the side venv's python (tests/integrations/setup_vllm.sh).

Usage: python vllm_offline.py MODEL_DIR OUT.json. Loads the model once with the plugin on (the runner keeps
pydecode's batch state) and switches the model runner's sampler between vLLM's and pydecode's through
``LLM.collective_rpc``; writes every run's token ids and logprobs as JSON.
"""
import json
import os
import sys

PROMPTS = ["The capital of France is", "Once upon a time", "def fibonacci(n):", "The three primary colors are"]
MAX_TOKENS = 16


def use_sampler(worker, name):
    from vllm.v1.sample.sampler import Sampler

    from pydecode.integrations.vllm.sampler import PydecodeVllmSampler

    runner = worker.model_runner
    sampler = PydecodeVllmSampler if name == "pydecode" else Sampler
    runner.sampler = sampler(logprobs_mode=runner.model_config.logprobs_mode)
    return type(runner.sampler).__name__


def outputs(results):
    rows = []
    for result in results:
        for completion in result.outputs:
            logprobs = [{str(t): lp.logprob for t, lp in step.items()} for step in completion.logprobs or []]
            rows.append({"prompt": list(result.prompt_token_ids), "tokens": list(completion.token_ids),
                         "logprobs": logprobs})
    return rows


def main(model, out_path):
    os.environ["PYDECODE_VLLM_SAMPLER"] = "1"  # the plugin adds the sampler's batch state to the model runner
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype="float32", max_model_len=512, max_num_seqs=16, enforce_eager=True, seed=0)
    greedy = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, logprobs=3)
    seeded = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, seed=1234, max_tokens=MAX_TOKENS, logprobs=2)
    others = [SamplingParams(temperature=1.1, min_p=0.05, seed=s, max_tokens=MAX_TOKENS) for s in (1, 2)]
    others.append(SamplingParams(temperature=0.7, repetition_penalty=1.3, presence_penalty=0.5, max_tokens=8))
    runs = {"samplers": llm.collective_rpc(use_sampler, args=("vllm",))}
    runs["vllm_greedy"] = outputs(llm.generate(PROMPTS, greedy, use_tqdm=False))
    runs["vllm_penalties"] = outputs(llm.generate(PROMPTS, SamplingParams(
        temperature=0, repetition_penalty=1.5, frequency_penalty=0.5, max_tokens=MAX_TOKENS), use_tqdm=False))
    runs["vllm_seeded"] = outputs(llm.generate(PROMPTS[:1], seeded, use_tqdm=False))
    runs["samplers"] += llm.collective_rpc(use_sampler, args=("pydecode",))
    runs["pydecode_greedy"] = outputs(llm.generate(PROMPTS, greedy, use_tqdm=False))
    runs["pydecode_penalties"] = outputs(llm.generate(PROMPTS, SamplingParams(
        temperature=0, repetition_penalty=1.5, frequency_penalty=0.5, max_tokens=MAX_TOKENS), use_tqdm=False))
    # one seeded request alone, again alone, and third in a batch of differently-parameterised requests
    runs["seeded_alone"] = outputs(llm.generate(PROMPTS[:1], seeded, use_tqdm=False))
    runs["seeded_again"] = outputs(llm.generate(PROMPTS[:1], seeded, use_tqdm=False))
    runs["seeded_in_batch"] = outputs(llm.generate(PROMPTS[1:3] + PROMPTS[:1] + PROMPTS[3:],
                                                   others[:2] + [seeded] + others[2:], use_tqdm=False))
    processors = {
        "no_repeat_ngram_size": {"no_repeat_ngram_size": 2},
        "bad_words_ids": {"bad_words_ids": [[7042], [260, 3575]]},
        "sequence_bias": {"sequence_bias": [[[260], 5.0], [[30, 198], 3.0]]},
    }
    for name, extra in processors.items():
        params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, extra_args=extra)
        runs[name] = outputs(llm.generate(PROMPTS, params, use_tqdm=False))
    # an epsilon cut of 0.5 leaves only the most likely token: sampling at temperature 1 becomes greedy
    cut = SamplingParams(temperature=1.0, seed=5, max_tokens=MAX_TOKENS, extra_args={"epsilon_cutoff": 0.5})
    runs["epsilon_half"] = outputs(llm.generate(PROMPTS, cut, use_tqdm=False))
    plain = SamplingParams(temperature=1.0, seed=5, max_tokens=MAX_TOKENS)
    runs["plain_sampling"] = outputs(llm.generate(PROMPTS, plain, use_tqdm=False))
    try:
        llm.generate(PROMPTS[:1], SamplingParams(max_tokens=2, extra_args={"typical_p": 1.5}), use_tqdm=False)
        runs["invalid"] = "accepted"
    except Exception as error:  # vLLM's validation error class moved between versions
        runs["invalid"] = f"{type(error).__name__}: {error}"
    with open(out_path, "w") as f:
        json.dump(runs, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
