"""vLLM's side of ``bench_e2e.py``, run by the vLLM venv's python: greedy decoding of the given token-id prompts with
the offline ``LLM``; prints one JSON line (engine start seconds, seconds of each run, tokens generated, token ids).
Usage: ``python e2e_vllm_worker.py '{"model": ..., "dtype": "float32", "prompts": [[ids]], "max_tokens": 64,
"repeats": 3}'``
"""
import json
import os
import sys
import time

# one process, the OpenMP threads unbound (the machine is shared); set before vLLM is imported
for _key, _value in {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "2",
                     "VLLM_CPU_OMP_THREADS_BIND": "nobind"}.items():
    os.environ.setdefault(_key, _value)


def main() -> None:
    job = json.loads(sys.argv[1])
    from vllm import LLM, SamplingParams

    start = time.perf_counter()
    llm = LLM(model=job["model"], dtype=job["dtype"], max_model_len=256, max_num_seqs=len(job["prompts"]), seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=job["max_tokens"], ignore_eos=True)
    requests = [{"prompt_token_ids": ids} for ids in job["prompts"]]
    llm.generate(requests, params, use_tqdm=False)  # warm-up
    startup = time.perf_counter() - start
    seconds = []
    for _ in range(job["repeats"]):
        start = time.perf_counter()
        outputs = llm.generate(requests, params, use_tqdm=False)
        seconds.append(time.perf_counter() - start)
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    print(json.dumps(dict(startup_s=startup, seconds=seconds, tokens=tokens)))


if __name__ == "__main__":
    main()
