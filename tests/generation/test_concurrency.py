"""Many threads calling ``pydecode.generate`` on one shared model at once, the way a simple server does: every
thread's output equals its single-threaded output, and no global state (backend choice, CPU instruction set, random
streams, the model's attention implementation) leaks between calls. The one process-wide switch,
``forced_cpu_isa``, refuses a second thread instead of changing the first one's kernels."""
import threading

import pytest
import torch

import pydecode
from pydecode.ops.backends import cpu_isa, extension_loaded, forced_cpu_isa

from tests.generation.models import padded_batch, tiny_model

KIVI = dict(cache_implementation="kivi", cache_config={"nbits": 4, "group_size": 16, "residual_length": 16})
CALLS = [  # (keyword arguments, prompt seed): strategies, backends and caches mixed
    (dict(do_sample=False), 0),
    (dict(do_sample=True, seed=1, top_k=20, top_p=0.9), 1),
    (dict(do_sample=True, seed=2, temperature=0.7, backend="torch"), 2),
    (dict(num_beams=3, num_return_sequences=2, do_sample=False), 3),
    (dict(do_sample=True, seed=torch.tensor([5, 6, 7]), repetition_penalty=1.3, frequency_penalty=0.5), 4),
    (dict(do_sample=False, **KIVI), 5),
    (dict(do_sample=True, seed=9, min_p=0.1, output_logprobs=True, return_dict_in_generate=True), 6),
    (dict(do_sample=True, seed=3, **KIVI), 7),
]


def _run(model, kwargs, prompt_seed):
    ids, mask = padded_batch(seed=prompt_seed)
    out = pydecode.generate(model, ids, attention_mask=mask, max_new_tokens=12, **kwargs)
    return (out.sequences, out.logprobs) if hasattr(out, "sequences") else (out, None)


def _equal(a, b):
    return torch.equal(a[0], b[0]) and (a[1] is None or torch.equal(a[1], b[1]))


def test_threads_match_single_threaded_outputs():
    model = tiny_model("llama")
    attention = model.config._attn_implementation
    isa = cpu_isa()
    alone = [_run(model, kwargs, seed) for kwargs, seed in CALLS]
    results, errors = {}, []
    start = threading.Barrier(len(CALLS) * 2)

    def worker(slot):
        kwargs, seed = CALLS[slot % len(CALLS)]
        try:
            start.wait()
            for _ in range(2):
                results.setdefault(slot, []).append(_run(model, kwargs, seed))
        except BaseException as error:  # noqa: BLE001  (reported below, with the slot)
            errors.append((slot, error))

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(len(CALLS) * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(thread.is_alive() for thread in threads), "a generate call hangs under threads"
    assert not errors, errors
    for slot, outputs in results.items():
        for out in outputs:
            assert _equal(out, alone[slot % len(CALLS)]), f"thread {slot} ({CALLS[slot % len(CALLS)][0]}) differs"
    assert model.config._attn_implementation == attention, "the KIVI attention switch leaked"
    assert cpu_isa() == isa
    assert all(_equal(_run(model, kwargs, seed), alone[i]) for i, (kwargs, seed) in enumerate(CALLS))


@pytest.mark.skipif(not extension_loaded(), reason="needs the C++ extension")
def test_forced_cpu_isa_refuses_a_second_thread():
    entered, release, seen = threading.Event(), threading.Event(), []

    def holder():
        with forced_cpu_isa("baseline"):
            entered.set()
            release.wait(timeout=60)

    thread = threading.Thread(target=holder)
    thread.start()
    assert entered.wait(timeout=60)
    try:
        with pytest.raises(RuntimeError, match="another thread"):
            with forced_cpu_isa("auto"):
                seen.append("entered")
        assert cpu_isa() == "baseline" and not seen
    finally:
        release.set()
        thread.join(timeout=60)
    with forced_cpu_isa("baseline"):  # free again once the holder left
        assert cpu_isa() == "baseline"
