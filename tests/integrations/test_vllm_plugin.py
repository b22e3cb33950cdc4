"""The vLLM plugin entry point without vLLM: off by default, a clear error on a bad switch or an untested vLLM."""
import sys
import types

import pytest

from pydecode.integrations.vllm import plugin


def test_off_by_default_and_with_zero(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # importing vLLM would fail: register must not try
    monkeypatch.delenv(plugin.ENABLE_VARIABLE, raising=False)
    plugin.register()
    monkeypatch.setenv(plugin.ENABLE_VARIABLE, "0")
    plugin.register()


def test_bad_switch_raises(monkeypatch):
    monkeypatch.setenv(plugin.ENABLE_VARIABLE, "yes")
    with pytest.raises(ValueError, match="PYDECODE_VLLM_SAMPLER must be 0 or 1"):
        plugin.register()


def test_untested_vllm_version_raises(monkeypatch):
    monkeypatch.setenv(plugin.ENABLE_VARIABLE, "1")
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(__version__="0.1.0"))
    with pytest.raises(RuntimeError, match="tested with vLLM 0.32.0, not 0.1.0"):
        plugin.register()
