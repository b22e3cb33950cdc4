"""pydecode's SGLang sampling backend against SGLang's real classes (its plugin loader, argument parser,
create_sampler, Sampler, SamplingParams, SamplingBatchInfo.from_schedule_batch) with stand-in requests; run by
test_sglang.py with the SGLang side venv's python (tests/integrations/setup_sglang.sh) and setup.py's
``sglang.srt.plugins`` entry point as its argument. Exits non-zero on a mismatch.

SGLang's runtime context is published the way SGLang's own unit tests do (``sglang.test.parallel_groups.publish``),
with a one-rank TP group that has no device group: enough to construct a ``Sampler`` without its distributed runtime.
"""
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parent))
from sglang_import import import_sglang  # noqa: E402

import_sglang()

from sglang.srt.layers.logits_processor import LogitsProcessorOutput  # noqa: E402
from sglang.srt.layers.sampler import Sampler, create_sampler  # noqa: E402
from sglang.srt.plugins import load_plugins  # noqa: E402
from sglang.srt.runtime_context import get_parallel, reset_context  # noqa: E402
from sglang.srt.sampling.sampling_batch_info import SamplingBatchInfo  # noqa: E402
from sglang.srt.sampling.sampling_params import SamplingParams  # noqa: E402
from sglang.srt.server_args import ServerArgs, prepare_server_args  # noqa: E402
from sglang.test.parallel_groups import publish  # noqa: E402

from pydecode.integrations.sglang.logit_processor import PydecodeLogitProcessor  # noqa: E402
from pydecode.integrations.sglang.sampler import PydecodeSampler  # noqa: E402
from pydecode.ops.sample.reference import process_logits  # noqa: E402

VOCAB = 50


class StandInBatch(SimpleNamespace):
    """The fields of SGLang's ScheduleBatch that SamplingBatchInfo.from_schedule_batch reads (weak-referenceable)."""


def runtime(server_args):
    """Publish SGLang's runtime context for a one-rank server started with ``server_args``."""
    reset_context()
    publish(server_args, role="test")
    get_parallel().override_permanently(tp_group=SimpleNamespace(rank_in_group=0, world_size=1, device_group=None))


def batch_info(params, seeds=None, processor=None):
    """SGLang's SamplingBatchInfo for requests with these SamplingParams keywords (``sampling_seed`` as SGLang's
    deterministic inference would set it; ``processor``: every request's custom logit processor string)."""
    reqs = [SimpleNamespace(sampling_params=SamplingParams(**p), custom_logit_processor=processor,
                            return_sampling_mask=False, sampling_logprobs_mode=None) for p in params]
    info = SamplingBatchInfo.from_schedule_batch(StandInBatch(reqs=reqs, device="cpu"), VOCAB)
    if seeds is not None:
        info.sampling_seed = torch.tensor(seeds, dtype=torch.int64)
    return info


def sample(sampler, logits, info, positions, **logprobs):
    out = LogitsProcessorOutput(next_token_logits=logits.clone())
    return_logprob = bool(logprobs)
    tokens = sampler(out, info, return_logprob, logprobs.get("top", [0] * len(logits)),
                     logprobs.get("ids", [None] * len(logits)), torch.as_tensor(positions))
    return tokens, out


def allowed(logits, temperature, top_k=None, top_p=1.0, min_p=0.0):
    """SGLang's filtered distribution of one row (its documented top-k, top-p, min-p), renormalised."""
    probs = torch.softmax(logits / temperature, -1)
    order = probs.argsort(descending=True)
    sorted_probs = probs[order]
    keep = torch.ones_like(sorted_probs, dtype=torch.bool)
    if top_k is not None:
        keep[top_k:] = False
    keep &= (sorted_probs.cumsum(0) - sorted_probs) <= top_p
    keep &= sorted_probs >= sorted_probs[0] * min_p
    out = torch.zeros_like(probs)
    out[order[keep]] = sorted_probs[keep]
    return out / out.sum()


def check_registration(entry_point):
    """SGLang's plugin loader finds the entry point in an installed distribution's metadata and runs it; its argument
    parser then accepts ``--sampling-backend pydecode`` and create_sampler builds pydecode's sampler."""
    dist = Path(tempfile.mkdtemp()) / "pydecode_plugin-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pydecode-plugin\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[sglang.srt.plugins]\n{entry_point}\n")
    sys.path.insert(0, str(dist.parent))
    load_plugins()
    server_args = prepare_server_args(["--model-path", "dummy", "--sampling-backend", "pydecode", "--device", "cpu",
                                       "--enable-custom-logit-processor"])
    runtime(server_args)
    sampler = create_sampler()
    assert type(sampler) is PydecodeSampler and isinstance(sampler, Sampler), type(sampler)
    return sampler, server_args


def check_greedy_and_logprobs(sampler, server_args, logits):
    """Greedy tokens and every logprob output equal SGLang's own Sampler's (its pytorch backend)."""
    params = [{"temperature": 0.0}] * 4
    info = batch_info(params)
    tokens, out = sample(sampler, logits, info, [3, 4, 5, 6], top=[2, 0, 3, 0], ids=[None, [1, 2], None, None])
    runtime(ServerArgs(model_path="dummy", sampling_backend="pytorch", device="cpu"))
    theirs, reference = sample(Sampler(), logits, batch_info(params), [3, 4, 5, 6], top=[2, 0, 3, 0],
                               ids=[None, [1, 2], None, None])
    runtime(server_args)
    assert torch.equal(tokens.long(), theirs.long()) and torch.equal(tokens.long(), logits.argmax(-1))
    torch.testing.assert_close(out.next_token_logprobs, reference.next_token_logprobs, atol=1e-5, rtol=0)
    for mine, their in zip(out.next_token_top_logprobs_val, reference.next_token_top_logprobs_val):
        torch.testing.assert_close(torch.as_tensor(mine), torch.as_tensor(their), atol=1e-5, rtol=0)
    top_ids = [list(ids) for ids in out.next_token_top_logprobs_idx]
    assert top_ids == [list(ids) for ids in reference.next_token_top_logprobs_idx], top_ids
    for mine, their in zip(out.next_token_token_ids_logprobs_val, reference.next_token_token_ids_logprobs_val):
        torch.testing.assert_close(torch.as_tensor(mine), torch.as_tensor(their), atol=1e-5, rtol=0)


ROWS = [{"temperature": 0.0}, {"temperature": 0.7, "top_k": 5}, {"temperature": 1.0, "top_p": 0.5},
        {"temperature": 0.9, "min_p": 0.3}, {"temperature": 1.3, "top_k": 8, "top_p": 0.8, "min_p": 0.05}]


def check_mixed_batch(sampler, logits):
    """Each row's tokens follow pydecode's processed distribution, which for one filter is SGLang's own (with several,
    pydecode renormalises after each: top-p counts the mass left by top-k); logprobs are log_softmax(logits / t)."""
    draws = 3000
    info = batch_info([p for p in ROWS for _ in range(draws)], seeds=list(range(len(ROWS) * draws)))
    rows = logits.repeat_interleave(draws, 0)
    tokens, out = sample(sampler, rows, info, [7] * len(rows), top=[0] * len(rows), ids=[None] * len(rows))
    t = torch.tensor([p["temperature"] or 1.0 for p in ROWS]).repeat_interleave(draws)[:, None]
    expected_logprobs = torch.log_softmax(rows / t, -1).gather(1, tokens.long()[:, None])[:, 0]
    torch.testing.assert_close(out.next_token_logprobs, expected_logprobs, atol=1e-5, rtol=0)
    for index, params in enumerate(ROWS):
        got = tokens[index * draws:(index + 1) * draws].long()
        if params["temperature"] == 0.0:
            assert bool((got == logits[index].argmax()).all()), "greedy row did not take the argmax"
            continue
        want = torch.softmax(process_logits(logits[index:index + 1], params["temperature"], params.get("top_k", 0),
                                            params.get("top_p", 1.0), params.get("min_p", 0.0))[0], -1)
        if len(params) == 2:
            theirs = allowed(logits[index], params["temperature"], params.get("top_k"), params.get("top_p", 1.0),
                             params.get("min_p", 0.0))
            torch.testing.assert_close(want, theirs, atol=1e-6, rtol=0)
        assert bool((want[got] > 0).all()), f"row {index} drew a token its filters remove"
        freq = torch.bincount(got, minlength=VOCAB).float() / draws
        gap = (freq - want).abs().max().item()
        assert gap < 0.04, f"row {index}: empirical frequencies differ from SGLang's filtered distribution by {gap}"


def check_seeds(sampler, logits):
    """A seeded request's token depends on (seed, position) only: not on its batch neighbours or row."""
    info = batch_info(ROWS[1:], seeds=[11, 12, 13, 14])
    tokens, _ = sample(sampler, logits[1:], info, [5, 6, 7, 8])
    alone, _ = sample(sampler, logits[3:4], batch_info(ROWS[3:4], seeds=[13]), [7])
    flipped, _ = sample(sampler, logits[1:].flip(0), batch_info(ROWS[1:][::-1], seeds=[14, 13, 12, 11]), [8, 7, 6, 5])
    assert tokens[2] == alone[0] and torch.equal(tokens, flipped.flip(0)), (tokens, alone, flipped)
    over_positions = [sample(sampler, logits[2:3], batch_info(ROWS[2:3], seeds=[13]), [p])[0].item()
                      for p in range(40)]
    assert len(set(over_positions)) > 1, "one seed gave the same token at every position"


def check_custom_processor(sampler, logits):
    """The backend runs a request's CustomLogitProcessor before its draw, as SGLang's Sampler does."""
    best = logits[:2].argmax(-1).tolist()
    history = SimpleNamespace(origin_input_ids=[1], output_ids=[], sampling_params=SimpleNamespace(temperature=0.0))
    params = [{"temperature": 0.0, "custom_params": {"bad_words_ids": [[best[0]]], "__req__": history}},
              {"temperature": 0.0, "custom_params": {"__req__": history}}]
    tokens, _ = sample(sampler, logits[:2], batch_info(params, processor=PydecodeLogitProcessor.to_str()), [0, 0])
    banned = logits[0].clone()
    banned[best[0]] = float("-inf")
    assert tokens.tolist() == [banned.argmax().item(), best[1]], (tokens, best)


def check_refusal(sampler, logits):
    info = batch_info(ROWS[:1])
    info.sampling_mask_batch_indices = torch.tensor([0])
    try:
        sample(sampler, logits[:1], info, [0])
    except ValueError as error:
        assert "return_sampling_mask" in str(error)
    else:
        raise AssertionError("a sampling-mask request was accepted")


def main():
    sampler, server_args = check_registration(sys.argv[1])
    logits = torch.randn(len(ROWS), VOCAB, generator=torch.Generator().manual_seed(0)) * 2
    logits[0, -1] = logits[0].max()  # a tie: greedy takes the first maximum, as SGLang's argmax does
    check_greedy_and_logprobs(sampler, server_args, logits[:4])
    check_mixed_batch(sampler, logits)
    check_seeds(sampler, logits)
    check_custom_processor(sampler, logits)
    check_refusal(sampler, logits)
    reset_context()
    print("sglang sampler: ok")


if __name__ == "__main__":
    main()
