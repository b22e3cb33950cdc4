"""pydecode inside a real vLLM on CPU: vLLM 0.32 installed in its own venv by setup_vllm.sh, driven in subprocesses
(offline ``LLM.generate`` once, one ``vllm serve`` queried with the ``openai`` client). Skipped without that venv.

Oracles: vLLM's own sampler (greedy tokens, penalties, logprobs) and transformers' generate on the same weights
(pydecode's processors from ``extra_args``).
"""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
VENV = Path(os.environ.get("PYDECODE_VLLM_VENV", Path.home() / ".cache/pydecode/vllm-0.32.0"))
PYTHON = VENV / "bin" / "python"
# one OpenMP thread, unbound: vLLM's CPU backend pins a thread per core, which stalls on a shared machine
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}
SERVER_START_S = 300

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module", autouse=True)
def vllm_venv():
    """Skip (checked once, when a test of this module runs) where the side venv with vLLM is missing."""
    if not PYTHON.exists() or subprocess.run([str(PYTHON), "-c", "import vllm"], capture_output=True,
                                             cwd="/").returncode != 0:
        pytest.skip(f"no vLLM venv at {VENV}: run tests/integrations/setup_vllm.sh (or set PYDECODE_VLLM_VENV)")


def _side_env(**extra):
    """The side venv's environment; it imports pydecode from this checkout (its entry points from its install)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TRITON_INTERPRET")}
    return {**env, **VLLM_ENV, "PYTHONPATH": str(HERE.parent.parent), **extra}


@pytest.fixture(scope="module")
def offline(smollm2_converted, tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm") / "offline.json"
    run = subprocess.run([str(PYTHON), str(HERE / "vllm_offline.py"), smollm2_converted, str(out)], cwd="/",
                         env=_side_env(VLLM_ENABLE_V1_MULTIPROCESSING="0"), capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text())


def test_processor_interfaces_inside_the_vllm_venv():
    """tests/integrations/vllm_inside/ (vLLM's real interfaces, stand-in batches), run by the side venv's pytest."""
    run = subprocess.run([str(PYTHON), "-m", "pytest", str(HERE / "vllm_inside"), "-q", "-p", "no:cacheprovider"],
                         cwd=HERE.parent.parent, env=_side_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout


def test_the_runs_swapped_the_sampler(offline):
    assert offline["samplers"] == ["Sampler", "PydecodeVllmSampler"]


def test_greedy_tokens_and_logprobs_equal_vllms_sampler(offline):
    for ours, theirs in zip(offline["pydecode_greedy"], offline["vllm_greedy"], strict=True):
        assert ours["tokens"] == theirs["tokens"]
        assert len(ours["logprobs"]) == len(ours["tokens"])
        for step_ours, step_theirs in zip(ours["logprobs"], theirs["logprobs"]):
            assert step_ours.keys() == step_theirs.keys() and len(step_ours) in (3, 4)
            for token, value in step_theirs.items():
                assert abs(step_ours[token] - value) <= 1e-4


def test_penalties_equal_vllms_sampler(offline):
    assert [r["tokens"] for r in offline["pydecode_penalties"]] == [r["tokens"] for r in offline["vllm_penalties"]]
    assert offline["pydecode_penalties"] != offline["pydecode_greedy"]


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(offline):
    alone = offline["seeded_alone"][0]["tokens"]
    assert offline["seeded_again"][0]["tokens"] == alone
    assert offline["seeded_in_batch"][2]["tokens"] == alone
    assert alone != offline["pydecode_greedy"][0]["tokens"]


@pytest.fixture(scope="module")
def transformers_model(smollm2_converted):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_converted, dtype=torch.float32).eval()


@pytest.mark.parametrize("name, kwargs", [
    ("no_repeat_ngram_size", {"no_repeat_ngram_size": 2}),
    ("bad_words_ids", {"bad_words_ids": [[7042], [260, 3575]]}),
    ("sequence_bias", {"sequence_bias": [[[260], 5.0], [[30, 198], 3.0]]}),
])
def test_processors_match_transformers_generate(offline, transformers_model, name, kwargs):
    for row, greedy in zip(offline[name], offline["pydecode_greedy"]):
        prompt = torch.tensor([row["prompt"]])
        want = transformers_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                           max_new_tokens=len(greedy["tokens"]), **kwargs)
        assert row["tokens"] == want[0, prompt.shape[1]:].tolist()[:len(row["tokens"])]
    assert offline[name] != offline["pydecode_greedy"]  # the prompts are chosen so that each changes something


def test_warpers_apply_to_sampling_requests(offline):
    # epsilon 0.5 keeps only the most likely token; without it the same seed samples something else
    assert [r["tokens"] for r in offline["epsilon_half"]] == [r["tokens"] for r in offline["pydecode_greedy"]]
    assert offline["plain_sampling"] != offline["pydecode_greedy"]


def test_invalid_extra_args_are_rejected_at_admission(offline):
    assert "typical_p" in offline["invalid"] and "(0.0, 1.0]" in offline["invalid"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(smollm2_converted, tmp_path_factory):
    """A ``vllm serve`` of SmolLM2 sampling with pydecode (``PYDECODE_VLLM_SAMPLER=1``); stopped afterwards."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("vllm_serve") / "server.log", "w+")
    server = subprocess.Popen(
        # `vllm serve` is this entry point; vllm-cpu's `vllm` script looks up the metadata of a "vllm" distribution
        # that vllm-cpu does not install, so the module is started directly
        [str(PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2_converted,
         "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "512",
         "--max-num-seqs", "8", "--enforce-eager", "--served-model-name", "smollm2"],
        cwd="/", env=_side_env(PYDECODE_VLLM_SAMPLER="1"), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                log.seek(0)
                assert server.poll() is None, log.read()[-4000:]
                assert time.monotonic() < deadline, "vllm serve did not start in time:\n" + log.read()[-4000:]
                time.sleep(2)
        yield port, server, log
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def client_runs(served, tmp_path_factory):
    port, _, log = served
    out = tmp_path_factory.mktemp("vllm_client") / "client.json"
    run = subprocess.run([str(PYTHON), str(HERE / "vllm_client.py"), f"http://127.0.0.1:{port}/v1", "smollm2",
                          str(out)], cwd="/", env=_side_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    log.seek(0)
    return json.loads(out.read_text()), log.read()


def test_server_samples_with_pydecode(client_runs, offline):
    runs, _ = client_runs
    served = runs["offline_seeded"]["choices"][0]["token_ids"]
    assert served == offline["seeded_alone"][0]["tokens"]
    assert served != offline["vllm_seeded"][0]["tokens"]


def test_stop_strings_and_finish_reasons(client_runs):
    runs, _ = client_runs
    stopped = runs["stop"]["choices"][0]
    assert stopped["finish_reason"] == "stop" and "\n" not in stopped["text"] and stopped["text"]
    assert runs["length"]["choices"][0]["finish_reason"] == "length"
    assert runs["length"]["completion_tokens"] == 4


def test_logprobs_count(client_runs):
    runs, _ = client_runs
    top = runs["logprobs"]["choices"][0]["top_logprobs"]
    assert len(top) == 4 and all(len(step) in (3, 4) for step in top)


def test_seeded_requests_reproduce_and_n_gives_n_choices(client_runs):
    runs, _ = client_runs
    texts = [c["text"] for c in runs["seeded"]["choices"]]
    assert len(texts) == 2 and texts == [c["text"] for c in runs["seeded_again"]["choices"]]


def test_streaming_gives_the_same_text(client_runs):
    runs, _ = client_runs
    assert runs["stream_text"] == runs["plain_greedy"]["choices"][0]["text"]


def test_pydecode_arguments_through_vllm_xargs(client_runs):
    runs, _ = client_runs
    ids = runs["no_repeat"]["choices"][0]["token_ids"]
    assert len(ids) == len(set(ids))  # no_repeat_ngram_size=1: no token twice (the prompt's included)
    plain = runs["plain_greedy"]["choices"][0]["token_ids"]
    assert runs["banned_first"]["choices"][0]["token_ids"][0] != plain[0]


def test_invalid_argument_is_http_400_and_the_server_keeps_serving(client_runs, served):
    runs, _ = client_runs
    assert runs["invalid"]["status"] == 400 and "typical_p" in runs["invalid"]["message"]
    assert runs["after_invalid"]["choices"][0]["finish_reason"] == "length"
    assert served[1].poll() is None
