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


def test_prepare_adapter_links_a_local_organism_and_fails_offline(tmp_path, monkeypatch):
    """A released organism adapter given as a local directory is linked with a manifest; a
    directory without adapter_config.json is refused; a hub id that cannot be downloaded
    fails with what to do (the same kind of error as a model)."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from motivation_profiles.models.prepare import ModelUnavailableError, prepare_adapter

    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"r": 8}')
    (src / "adapter_model.safetensors").write_bytes(b"weights")
    dest = prepare_adapter("m", {"source": str(src), "revision": None}, tmp_path / "out" / "m")
    assert (dest / "adapter_config.json").is_symlink() and (dest / "manifest.json").is_file()
    assert '"organism"' in (dest / "manifest.json").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelUnavailableError, match="not a PEFT adapter"):
        prepare_adapter("m", {"source": str(empty), "revision": None}, tmp_path / "out" / "e")

    def offline(**kwargs):
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelUnavailableError, match="cannot download organism adapter "
                       "'owner/honly' \\(revision abc\\).*organism: \\{adapter: DIR\\}"):
        prepare_adapter("m", {"source": "owner/honly", "revision": "abc"}, tmp_path / "o" / "h")
    assert not (tmp_path / "o" / "h").exists()


def test_merged_adapter_generates_what_the_unmerged_one_does(tiny_model_dir, tmp_path):
    """``merge_adapter`` folds a LoRA into the weights: the same sampled transcripts and tag
    log-probabilities as the adapter applied on the fly, under steering too (hooks sit on the
    decoder layers of either)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from motivation_profiles.backends.base import ChatRequest, SamplingParams
    from motivation_profiles.backends.hf import HFBackend
    from motivation_profiles.models.hooks import Steering
    from motivation_profiles.models.load import load_model

    base, _ = load_model(tiny_model_dir)
    torch.manual_seed(0)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules="all-linear",
                                           init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    hidden = base.config.hidden_size
    steering = Steering({1: torch.randn(hidden).numpy()}, 3.0)
    reqs = [ChatRequest(f"r{i}", ({"role": "user", "content": f"Question {i}?"},
                                  {"role": "assistant", "content": "Answer:"}), seed=i)
            for i in range(3)]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=8)
    out = {}
    for merge in (False, True):
        b = HFBackend.from_pretrained(tiny_model_dir, adapter=tmp_path / "adapter",
                                      merge_adapter=merge, show_progress=False)
        assert type(b.model).__name__.startswith("PeftModel") is not merge
        texts = [c.text for c in b.generate(reqs, params)]
        b.steering = steering
        steered = [c.text for c in b.generate(reqs, params)]
        out[merge] = (texts, steered, torch.tensor(b.continuation_logprobs(reqs, [" yes", " no"])))
    plain = HFBackend.from_pretrained(tiny_model_dir, show_progress=False)
    assert out[True][0] == out[False][0] != [c.text for c in plain.generate(reqs, params)]
    assert out[True][1] == out[False][1] != out[True][0]
    torch.testing.assert_close(out[True][2], out[False][2], rtol=0, atol=1e-5)
