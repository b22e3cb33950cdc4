"""pydecode's SGLang CustomLogitProcessor and sampling backend against the real classes of the sglang wheel, in the
SGLang side venv (tests/integrations/setup_sglang.sh); skipped without it."""
import os
import re
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
VENV = Path(os.environ.get("PYDECODE_SGLANG_VENV", Path.home() / ".cache/pydecode/sglang-0.5.23"))
PYTHON = VENV / "bin" / "python"


def run_inside(script: str, *args: str) -> str:
    """Run ``script`` with the SGLang venv's python on this checkout's pydecode; returns its stdout."""
    if not PYTHON.exists() or subprocess.run([str(PYTHON), "-c", "import sglang"], capture_output=True,
                                             cwd="/").returncode != 0:
        pytest.skip(f"no SGLang venv at {VENV}: run tests/integrations/setup_sglang.sh (or set PYDECODE_SGLANG_VENV)")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "TRITON_INTERPRET")}
    run = subprocess.run([str(PYTHON), str(HERE / script), *args], cwd="/", capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(HERE.parent.parent)}, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run.stdout


def test_custom_logit_processor_inside_the_sglang_venv():
    assert "sglang processor: ok" in run_inside("sglang_inside.py")


def test_sampling_backend_inside_the_sglang_venv():
    setup = (HERE.parent.parent / "setup.py").read_text()
    entry_point = re.search(r'"sglang\.srt\.plugins": \["([^"]+)"\]', setup)
    assert entry_point, "setup.py declares no sglang.srt.plugins entry point"
    assert "sglang sampler: ok" in run_inside("sglang_sampler_inside.py", entry_point.group(1))
