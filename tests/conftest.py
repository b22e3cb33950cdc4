"""Test-wide set-up: Triton kernels run under the interpreter on a machine without a GPU, and the ``backend``
fixture runs a test once per backend usable on ``DEVICE`` (cuda when present, else cpu); without a GPU the CUDA
kernels run too, emulated on the CPU (``cuda-emulated``, see support/cuda_emulation.py)."""
import os

import pytest
import torch

try:
    from hypothesis import HealthCheck, Phase, settings
except ImportError:  # the vLLM side venv runs tests/integrations/vllm_inside with pytest alone
    settings = None

# Property suites (tests/properties): ``ci`` is the default (the whole directory in a few minutes on 2 cores);
# ``--hypothesis-profile=long`` runs thousands of examples per property, before a release (README: Reliability).
if settings is not None:
    _PROPERTY_SETTINGS = dict(deadline=None, print_blob=True, suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
    settings.register_profile("ci", max_examples=30, derandomize=True, **_PROPERTY_SETTINGS)
    settings.register_profile("long", max_examples=2000, **_PROPERTY_SETTINGS)
    # the sampling properties' slice in the sanitized CUDA-emulation run (cuda_emulation.py --asan)
    settings.register_profile("sanitized", max_examples=10, derandomize=True, **_PROPERTY_SETTINGS)
    settings.register_profile("dev", max_examples=30, derandomize=True, phases=[Phase.explicit, Phase.generate],
                              **_PROPERTY_SETTINGS)  # ci without shrinking: a quick first look at a failure
    settings.load_profile("ci")

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pydecode.ops.backends import active_backends, triton_available  # noqa: E402  (after TRITON_INTERPRET is set)

from tests.support import cuda_emulation  # noqa: E402
from tests.support.devices import DEVICE  # noqa: E402

ALL_BACKENDS = ("torch", "cpp", "cuda", "triton", "cuda-emulated")
KERNEL_BACKENDS = ALL_BACKENDS[1:]
# Interpreted Triton launches, compiled for a real GPU by the session's last test (test_triton_compiles.py).
TRITON_LAUNCHES = None
if os.environ.get("TRITON_INTERPRET") == "1" and triton_available():
    from tests.support import triton_launches

    TRITON_LAUNCHES = triton_launches.record()


# The tests that `-m "not slow"` (the README's quick subset) leaves to the full run: "file" or "file::test" (every
# parametrization). Chosen from per-test times so that the rest runs in a few minutes on 2 CPU cores.
SLOW_TESTS = (
    "test_triton_compiles.py",  # compiles every recorded Triton launch for two GPU architectures: minutes
    "test_real_model_parity.py",  # SmolLM2 against transformers, every case
    "test_sample.py::test_fused_logprobs_match_reference", "test_sample.py::test_draw_matches_reference",
    "test_sample.py::test_frequencies_match_reference_distribution",
    "test_beam_parity.py::test_beam_search_matches_transformers",
    "test_beam_parity.py::test_diverse_beam_search_matches_golden",
    "test_extra_processors.py::test_greedy_matches_transformers",
    "test_contrastive_dola.py::test_smollm2_matches_golden", "test_every_backend.py::test_goldens",
    "test_kivi_cache.py::test_kivi4_greedy_matches_full_precision",
    "test_cli.py::test_generate_streams_text", "test_cli.py::test_generate_several_sampled_sequences",
    "test_cli.py::test_console_entry_point_chat", "test_llm.py::test_smollm2_complete_chat_and_stream",
    # the property suites, a real vLLM (offline and served), SGLang's import, two gloo ranks, 16 threads
    "test_generate_fuzz.py", "test_kivi_properties.py", "test_op_properties.py", "test_sampling_properties.py",
    "test_error_rule.py",
    "test_vllm.py", "test_tensor_parallel.py", "test_concurrency.py", "test_sglang.py",
    # Inductor compiles of the decode step (the Dynamo-only test stays in the quick run)
    "test_compiled_decode.py::test_greedy_matches_eager_and_transformers",
    "test_compiled_decode.py::test_seeded_sampling_matches_eager",
    "test_compiled_decode.py::test_inductor_graph_is_reused_across_calls",
    "test_compiled_decode.py::test_cpu_passes_route_matmuls_and_drop_grouped_attention_copies",
    "test_compiled_decode.py::test_cpu_passes_route_bfloat16_matmuls_where_the_cpu_has_bf16_dot_products",
    "test_compiled_beam.py::test_inductor_beam_search_matches_eager",
    "test_static_kivi.py::test_compiled_kivi_with_inductor_matches_eager",
)


def pytest_collection_modifyitems(items):
    """The compile check of the recorded Triton launches runs after every test that launches a kernel; the tests
    named in SLOW_TESTS get the ``slow`` marker."""
    items.sort(key=lambda item: item.path.name == "test_triton_compiles.py")
    for item in items:
        file_and_test = f"{item.path.name}::{item.originalname}"
        if item.path.name in SLOW_TESTS or file_and_test in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


def _use_backend(name):
    """Yield the backend name a test passes to the ops, or skip where ``name`` cannot run on ``DEVICE``."""
    if name == "cuda-emulated":
        if not cuda_emulation.supported(DEVICE):
            pytest.skip("the CUDA kernels are emulated on x86-64 Linux CPUs without a GPU, with the C++ extension")
        with cuda_emulation.cuda_backend_on_cpu():
            yield "cuda"
        return
    if name not in active_backends(DEVICE):
        pytest.skip(f"backend {name} is not usable on {DEVICE} here")
    yield name


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    """Every backend, the reference (``torch``) included: for a behaviour every backend must show."""
    yield from _use_backend(request.param)


@pytest.fixture(params=KERNEL_BACKENDS)
def kernel_backend(request):
    """Every kernel backend, never the reference: for tests that compare a backend's result with the reference."""
    yield from _use_backend(request.param)


@pytest.fixture
def device():
    return DEVICE


@pytest.fixture(scope="session")
def smollm2_converted():
    """The converted SmolLM2-135M-Instruct folder, converted from the installed GGUF package on first use."""
    from pydecode.models import ModelNotInstalledError, model_path

    try:
        return model_path("smollm2")
    except ModelNotInstalledError as error:
        pytest.skip(str(error))
