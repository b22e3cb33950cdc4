"""Tensor-parallel consistency: two gloo ranks (CPU processes) split a tiny model's LM head by vocabulary,
all-gather the logits and sample with their own row orders; every rank must pick bitwise the same ids."""
import os
import random
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from transformers import DynamicCache

from pydecode import Sampler, SamplingParams

WORLD = 2
STEPS = 10
PARAMS = [
    SamplingParams(temperature=0.0),
    SamplingParams(temperature=0.9, top_k=40, seed=1),
    SamplingParams(temperature=1.2, top_p=0.8, seed=2, repetition_penalty=1.3),
    SamplingParams(do_sample=False, presence_penalty=0.5),
    SamplingParams(temperature=0.7, min_p=0.1, seed=3, frequency_penalty=0.8),
    SamplingParams(temperature=1.0, seed=4, dynatemp_range=0.5),
]


def sharded_logits(model, hidden: torch.Tensor, rank: int) -> torch.Tensor:
    """This rank's slice of the vocabulary through its half of the LM head, then all-gathered: (B, V)."""
    weight = model.lm_head.weight
    shard = weight.shape[0] // WORLD
    part = hidden @ weight[rank * shard:(rank + 1) * shard].T
    parts = [torch.empty_like(part) for _ in range(WORLD)]
    dist.all_gather(parts, part.contiguous())
    return torch.cat(parts, dim=-1)


def _rank_main(rank: int, init_file: str, results: str, sync: str | None) -> None:
    from tests.generation.models import VOCAB, tiny_model

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    model = tiny_model("llama")
    prompts = torch.randint(6, VOCAB, (len(PARAMS), 5), generator=torch.Generator().manual_seed(0))
    sampler = Sampler(8, VOCAB, "cpu", sync=sync)
    slots = [7 - i for i in range(len(PARAMS))]  # slot ids unrelated to row indices
    for slot, params, prompt in zip(slots, PARAMS, prompts):
        sampler.add_request(slot, params, prompt)
    # each rank orders the rows its own way; broadcasting ids needs one row order (as a TP engine's batch has)
    shuffle = random.Random(100 if sync == "broadcast" else 100 + rank)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        hidden = model.model(prompts, past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
        chosen = []
        for _ in range(STEPS):
            logits = sharded_logits(model, hidden, rank)
            if sync == "broadcast" and rank == 1:
                logits = logits + torch.randn_like(logits)  # a rank that disagrees: rank 0's ids win
            order = list(range(len(PARAMS)))
            shuffle.shuffle(order)
            tokens = torch.empty(len(PARAMS), dtype=torch.long)
            tokens[order] = sampler.sample(logits[order], [slots[i] for i in order]).token_ids
            sampler.append([slots[i] for i in order], tokens[order])
            chosen.append(tokens)
            hidden = model.model(tokens[:, None], past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
    ids = torch.stack(chosen, 1)
    gathered = [torch.empty_like(ids) for _ in range(WORLD)]
    dist.all_gather(gathered, ids)
    if rank == 0:
        torch.save(torch.stack(gathered), results)
    dist.destroy_process_group()


def run_ranks(sync=None) -> torch.Tensor:
    """(WORLD, requests, STEPS) token ids each rank chose."""
    with tempfile.TemporaryDirectory() as folder:
        init_file, results = os.path.join(folder, "init"), os.path.join(folder, "ids.pt")
        mp.spawn(_rank_main, args=(init_file, results, sync), nprocs=WORLD, join=True)
        return torch.load(results)


def test_ranks_pick_identical_ids_from_gathered_logits():
    ids = run_ranks()
    assert torch.equal(ids[0], ids[1])
    greedy = [i for i, p in enumerate(PARAMS) if not p.sampling]
    assert len(greedy) == 2 and len(set(map(tuple, ids[0].tolist()))) == len(PARAMS)  # rows really differ


def test_broadcast_sync_gives_every_rank_rank_zeros_ids():
    ids = run_ranks(sync="broadcast")
    assert torch.equal(ids[0], ids[1])
