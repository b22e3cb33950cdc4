"""Every Triton kernel launch the tests made under the interpreter compiles for Hopper (sm_90) and Ampere (sm_80)
GPUs with Triton's own compiler, as csrc/check_cuda.sh does for the CUDA sources: the interpreter accepts code the
compiler rejects, and CI has no GPU (see tests/support/triton_launches.py).
Runs last (tests/conftest.py sorts it there); alone, with nothing recorded, it skips."""
import json
import os
import subprocess
import sys
from pathlib import Path

import conftest
import pytest

from tests.support import triton_launches

ROOT = Path(__file__).resolve().parents[1]


def test_recorded_triton_launches_compile_for_gpus(tmp_path, request):
    launches = conftest.TRITON_LAUNCHES
    if not launches:
        pytest.skip("no interpreted Triton launch was recorded in this session (run it with the kernel tests)")
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:  # the run's last test works for minutes silently: say so
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ntest_triton_compiles: compiling the {len(launches)} distinct Triton kernel "
                                "launches recorded under the interpreter for sm_90 and sm_80 with Triton's compiler "
                                "(the run's last minutes)...")
    path = tmp_path / "launches.json"
    path.write_text(json.dumps(sorted(launches)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))  # this checkout's kernels
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9 warns when unset; 1 is every release's default
    result = subprocess.run([sys.executable, triton_launches.__file__, str(path), "--arch", "90", "80"], env=env,
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
