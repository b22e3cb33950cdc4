"""Requests to a running ``vllm serve`` for test_vllm.py, sent with the official ``openai`` client by the side
venv's python. Usage: python vllm_client.py BASE_URL MODEL OUT.json; writes what each request returned as JSON."""
import json
import sys

import openai

PROMPT = "The capital of France is"


def choice_dict(choice):
    logprobs = choice.logprobs.top_logprobs if choice.logprobs is not None else None
    return {"text": choice.text, "finish_reason": choice.finish_reason, "top_logprobs": logprobs,
            "token_ids": getattr(choice, "token_ids", None)}


def main(base_url, model, out_path):
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)

    def complete(**kwargs):
        response = client.completions.create(model=model, prompt=kwargs.pop("prompt", PROMPT), **kwargs)
        return {"choices": [choice_dict(c) for c in response.choices],
                "completion_tokens": response.usage.completion_tokens}

    runs = {
        "stop": complete(max_tokens=32, temperature=0, stop=["\n"]),
        "length": complete(max_tokens=4, temperature=0),
        "logprobs": complete(max_tokens=4, temperature=0, logprobs=3),
    }
    # top_k and repetition_penalty are vLLM's additions to the API: the openai client sends them in extra_body
    hosted = dict(max_tokens=12, temperature=0.9, top_p=0.95, seed=42, n=2,
                  extra_body={"top_k": 40, "repetition_penalty": 1.2})
    runs["seeded"] = complete(**hosted)
    runs["seeded_again"] = complete(**hosted)
    # vllm_offline.py's seeded request: pydecode's sampler draws other tokens than vLLM's for the same seed
    runs["offline_seeded"] = complete(max_tokens=16, temperature=0.8, top_p=0.9, seed=1234,
                                      extra_body={"top_k": 50, "return_token_ids": True})
    streamed = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0, stream=True)
    runs["stream_text"] = "".join(chunk.choices[0].text for chunk in streamed if chunk.choices)
    runs["plain_greedy"] = complete(max_tokens=12, temperature=0, extra_body={"return_token_ids": True})
    runs["no_repeat"] = complete(max_tokens=12, temperature=0, prompt="one one one one one",
                                 extra_body={"return_token_ids": True, "vllm_xargs": {"no_repeat_ngram_size": 1}})
    first = runs["plain_greedy"]["choices"][0]["token_ids"][0]
    runs["banned_first"] = complete(max_tokens=12, temperature=0, extra_body={
        "return_token_ids": True, "vllm_xargs": {"bad_words_ids": json.dumps([[first]])}})
    try:
        complete(max_tokens=4, extra_body={"vllm_xargs": {"typical_p": 1.5}})
        runs["invalid"] = {"status": 200}
    except openai.APIStatusError as error:
        runs["invalid"] = {"status": error.status_code, "message": str(error)}
    runs["after_invalid"] = complete(max_tokens=4, temperature=0)
    with open(out_path, "w") as f:
        json.dump(runs, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
