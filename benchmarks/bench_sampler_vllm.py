"""The ``vllm`` provider of ``bench_sampler.py``: vLLM's own ``vllm.v1.sample.sampler.Sampler`` on the same trace and
the same logits, run inside vLLM's environment (``bench_sampler.py`` starts this script there when that environment
exists; it is not pydecode's).

The batch's ``SamplingMetadata`` is rebuilt before every step from the requests in their (shuffled) row order, as
vLLM's input batch holds it: temperature (0 for greedy rows), top-k (the vocabulary where off), top-p, the
frequency / presence / repetition penalties with the prompts and each request's output tokens, and vLLM's built-in
min-p and logit-bias processors brought up to date through a ``BatchUpdate``. Only ``Sampler.forward`` is timed (the
penalties, logit bias, temperature, min-p, top-k / top-p, the draw); the host-side batch bookkeeping is not. The
requests are unseeded: vLLM draws seeded requests one row at a time with their own ``torch.Generator``.

Run: ``<vllm venv>/bin/python benchmarks/bench_sampler_vllm.py ROWS.pt OUT.json --batch-sizes 1,8 --vocabs 49152
--steps 6 --threads 2`` with the repository root and ``benchmarks/`` on ``PYTHONPATH``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from types import SimpleNamespace

import torch
from bench_sampler import PARAMETER_MIX, PROMPT_LEN, trace
from bench_sampling import make_logits
from vllm import SamplingParams as VllmParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessors
from vllm.v1.sample.logits_processor.builtin import LogitBiasLogitsProcessor, MinPLogitsProcessor
from vllm.v1.sample.metadata import SamplingMetadata
from vllm.v1.sample.sampler import Sampler


def vllm_params(p) -> VllmParams:
    """pydecode's ``SamplingParams`` of the trace as vLLM's (greedy: temperature 0)."""
    return VllmParams(temperature=p.temperature if p.sampling else 0.0, top_k=p.top_k if p.sampling else 0,
                      top_p=p.top_p if p.sampling else 1.0, min_p=p.min_p if p.sampling else 0.0,
                      frequency_penalty=p.frequency_penalty, presence_penalty=p.presence_penalty,
                      repetition_penalty=p.repetition_penalty,
                      logit_bias={ids[0]: bias for ids, bias in p.sequence_bias} if p.sequence_bias else None)


def metadata(requests: list[VllmParams], prompts: torch.Tensor, outputs: list[list[int]], vocab: int,
             processors: LogitsProcessors) -> SamplingMetadata:
    temperature = torch.tensor([r.temperature for r in requests], dtype=torch.float32)
    greedy = temperature < 1e-5
    return SamplingMetadata(
        temperature=temperature, all_greedy=bool(greedy.all()), all_random=not bool(greedy.any()),
        top_p=torch.tensor([r.top_p for r in requests], dtype=torch.float32),
        top_k=torch.tensor([r.top_k if 0 < r.top_k < vocab else vocab for r in requests], dtype=torch.int32),
        generators={}, max_num_logprobs=None, no_penalties=False, prompt_token_ids=prompts,
        frequency_penalties=torch.tensor([r.frequency_penalty for r in requests], dtype=torch.float32),
        presence_penalties=torch.tensor([r.presence_penalty for r in requests], dtype=torch.float32),
        repetition_penalties=torch.tensor([r.repetition_penalty for r in requests], dtype=torch.float32),
        output_token_ids=outputs, allowed_token_ids_mask=None, bad_words_token_ids={}, logitsprocs=processors)


def run_case(batch: int, vocab: int, steps: int, rows: torch.Tensor) -> list[float]:
    events = trace(batch, steps, seed=batch + vocab)
    prompts = torch.randint(0, vocab, (batch, PROMPT_LEN), generator=torch.Generator().manual_seed(batch))
    config = SimpleNamespace(scheduler_config=SimpleNamespace(max_num_seqs=batch))
    min_p, bias = MinPLogitsProcessor(config, torch.device("cpu"), False), LogitBiasLogitsProcessor(
        None, torch.device("cpu"), False)
    processors = LogitsProcessors([min_p, bias])
    sampler = Sampler()
    kind, outputs = [0] * batch, [[] for _ in range(batch)]
    times = []
    for step, (order, joining, _) in enumerate(events):
        for slot, k in joining.items():
            kind[slot], outputs[slot] = k, []
        requests = [vllm_params(PARAMETER_MIX[kind[slot]]) for slot in order]
        row_outputs = [outputs[slot] for slot in order]
        added = [(i, r, prompts[slot].tolist(), row_outputs[i]) for i, (r, slot) in enumerate(zip(requests, order))]
        for processor in (min_p, bias):
            processor.update_state(BatchUpdate(batch_size=batch, removed=[], added=added, moved=[]))
        meta = metadata(requests, prompts[order], row_outputs, vocab, processors)
        logits = make_logits(rows, batch, vocab, "cpu")
        t0 = time.perf_counter()
        tokens = sampler(logits, meta).sampled_token_ids
        t1 = time.perf_counter()
        for out, token in zip(row_outputs, tokens[:, 0].tolist()):
            out.append(token)
        if step:  # the first step warms up
            times.append((t1 - t0) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", help="torch.save'd logit rows the logits are drawn from")
    parser.add_argument("out", help="JSON file the result rows are written to")
    parser.add_argument("--batch-sizes", default="1,8,64,256")
    parser.add_argument("--vocabs", default="49152,128256")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = torch.load(args.rows)
    results = []
    for vocab in [int(v) for v in args.vocabs.split(",")]:
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            ms = statistics.median(run_case(batch, vocab, args.steps, rows))
            results.append(dict(batch=batch, vocab=vocab, provider="vllm", ms=round(ms, 4)))
    with open(args.out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
