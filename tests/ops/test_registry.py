"""The backend registry: every registered target loads wherever its backend runs, a forced backend that cannot load
raises with its cause, and ``auto`` logs once why it passed over a backend."""
import importlib
import logging

import pytest

import pydecode

# by module path (pydecode.ops.backends is also a function's name); importing pydecode.ops registers every op
backends = importlib.import_module("pydecode.ops.backends")


def runs_here(backend: str) -> str | None:
    """Why ``backend``'s targets cannot be loaded in this process, or None. The cuda adapters are the cpp ones (torch
    dispatches on the device), so they load wherever the extension does."""
    if backend == "cuda":
        return None if backends.extension_loaded() else "the compiled extension is not loaded"
    return backends.unusable_reason(backend, "cpu") and backends.unusable_reason(backend, "cuda")


@pytest.mark.parametrize("op, backend, target", backends.registered_targets(),
                         ids=[f"{op}-{backend}" for op, backend, _ in backends.registered_targets()])
def test_every_registered_target_loads_where_its_backend_runs(op, backend, target):
    reason = runs_here(backend)
    if reason:
        pytest.skip(f"{backend} does not run here: {reason}")
    fn, error = backends.load_target(target)
    assert callable(fn), f"{op} on {backend}: {target} did not load ({error!r})"
    assert target.endswith(f":{op}"), "the registry key, the function and the torch.ops op share one name"


def test_each_op_registers_the_backends_its_package_has():
    """register_op registers the reference and the cpp adapter always, cuda and triton only where they exist."""
    registered = {}
    for op, backend, _ in backends.registered_targets():
        registered.setdefault(op, set()).add(backend)
    assert registered["decode_linear"] == {"torch", "cpp"}
    assert registered["top_k_top_p_sample"] == {"torch", "cpp", "cuda", "triton"}
    assert all({"torch", "cpp"} <= found for found in registered.values())


@pytest.fixture
def broken_op():
    """An op whose cpp target cannot be imported and whose torch target works."""
    backends.register("layout_probe", "cpp", "pydecode.no_such_module:layout_probe")
    backends.register("layout_probe", "torch", "math:sqrt")
    yield "layout_probe"
    backends._REGISTRY.pop("layout_probe")
    backends._warn_fallback.cache_clear()


@pytest.mark.skipif(not backends.extension_loaded(), reason="cpp must be usable for its target to be tried")
def test_forced_backend_that_cannot_load_raises_with_its_cause(broken_op):
    with pytest.raises(RuntimeError, match="no_such_module") as info:
        backends.resolve(broken_op, "cpu", "cpp")
    assert isinstance(info.value.__cause__, ImportError)


@pytest.mark.skipif(not backends.extension_loaded(), reason="auto tries cpp first only when it is usable")
def test_auto_falls_back_with_one_logged_reason(broken_op, caplog):
    with caplog.at_level(logging.WARNING, logger="pydecode.ops"):
        for _ in range(3):
            name, fn = backends.resolve(broken_op, "cpu", "auto")
            assert (name, fn(4.0)) == ("torch", 2.0)
    warnings = [r for r in caplog.records if r.name == "pydecode.ops"]
    assert len(warnings) == 1 and "no_such_module" in warnings[0].getMessage()


def test_generate_reads_the_backend_variable_once(monkeypatch):
    """The decode loop gets the backend name the call resolved; the environment is not read per step."""
    from tests.generation.models import padded_batch, tiny_model

    reads = []
    real_requested = backends.requested_backend

    def counting(backend=None):
        if backend is None:
            reads.append(1)
        return real_requested(backend)

    monkeypatch.setattr(backends, "requested_backend", counting)
    pydecode.generate(tiny_model("llama"), padded_batch()[0], attention_mask=padded_batch()[1], max_new_tokens=6,
                      do_sample=True, seed=0, repetition_penalty=1.3, output_logprobs=True,
                      return_dict_in_generate=True)
    assert len(reads) <= 1
