#!/usr/bin/env bash
# Build (or reuse) a side virtual environment in which SGLang's sampler classes import on CPU.
#
# It borrows torch 2.13+cpu and transformers from the vLLM side venv (setup_vllm.sh, a .pth line) and adds the sglang
# wheel without its dependencies (they pin a CUDA torch) plus the three small modules its sampler path imports.
#
#   tests/integrations/setup_sglang.sh     # prints the venv's python on the last line; ~3 min once vLLM's venv exists
set -euo pipefail

SGLANG_VERSION=0.5.23
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VLLM_VENV="${PYDECODE_VLLM_VENV:-$HOME/.cache/pydecode/vllm-0.32.0}"
VENV="${PYDECODE_SGLANG_VENV:-$HOME/.cache/pydecode/sglang-$SGLANG_VERSION}"
PY="$VENV/bin/python"

if [ ! -x "$VLLM_VENV/bin/python" ]; then
    echo "setup_sglang: needs the vLLM side venv first (tests/integrations/setup_vllm.sh)" >&2
    exit 1
fi
if ! "$PY" -c "import sglang" 2>/dev/null; then
    "$(readlink -f "$VLLM_VENV/bin/python")" -m venv "$VENV"
    site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$VLLM_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/vllm_side_venv.pth"
    "$PY" -m pip install -q --no-deps "sglang==$SGLANG_VERSION"
    "$PY" -m pip install -q orjson IPython traitlets
fi
(cd / && "$PY" "$HERE/sglang_import.py")
echo "$PY"
