"""prepare_model's failure paths: an unreachable hub model fails with what to do, and leaves
nothing behind."""

from __future__ import annotations

import pytest

from motivation_profiles.models.prepare import ModelUnavailableError, prepare_model


def test_offline_hub_model_names_model_and_remedy(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # empty cache
    spec = {"source": "hub", "hub_id": "meta-llama/Llama-3.1-70B-Instruct", "revision": "main"}
    dest = tmp_path / "models" / "llama"
    with pytest.raises(ModelUnavailableError) as info:
        prepare_model("llama", spec, dest)
    msg = str(info.value)
    assert "meta-llama/Llama-3.1-70B-Instruct" in msg
    assert "source: local" in msg and "huggingface-cli download" in msg
    assert not dest.exists() and not (tmp_path / "models" / ".llama.partial").exists()


def test_local_source_requires_a_checkpoint(tmp_path):
    with pytest.raises(ModelUnavailableError, match="no config.json"):
        prepare_model("x", {"source": "local", "path": str(tmp_path)}, tmp_path / "out" / "x")
    assert not (tmp_path / "out" / "x").exists()
