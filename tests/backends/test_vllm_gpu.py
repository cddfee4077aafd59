"""The vLLM backend on a real GPU with the embedded model (SmolLM2-135M-Instruct). Skipped
without CUDA or without vllm installed; run with ``pytest tests/backends/test_vllm_gpu.py -rs``.

Checks: steering with alpha = 0 equals no steering; alpha != 0 changes outputs; greedy outputs
of the HF and vLLM backends agree (most prompts identical; the rest share a long prefix,
allowing for kernel numerics); a LoRA adapter changes outputs."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm"),
]

from motivation_profiles.backends.base import ChatRequest, SamplingParams  # noqa: E402
from motivation_profiles.backends.hf import HFBackend  # noqa: E402
from motivation_profiles.models.hooks import Steering  # noqa: E402

PARAMS = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=32)


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
    from motivation_profiles.models.prepare import prepare_model

    return prepare_model("smollm2-135m", {"source": "embedded"},
                         tmp_path_factory.mktemp("models") / "smollm2-135m")


@pytest.fixture(scope="module")
def requests_():
    topics = ["bread", "the moon", "chess", "rivers", "violins", "glaciers"]
    return [ChatRequest(f"g{i}", [{"role": "user", "content": f"Say two things about {t}."}],
                        seed=i) for i, t in enumerate(topics)]


def _steering(alpha: float) -> Steering:
    rng = np.random.default_rng(0)
    vecs = {}
    for layer in (10, 20):
        v = rng.standard_normal(576)
        vecs[layer] = (v / np.linalg.norm(v) * 8).astype(np.float32)
    return Steering(vecs, alpha)


def _texts(backend, reqs):
    return [c.text for c in backend.generate(reqs, PARAMS)]


def _vllm(model_dir, **kw):
    from motivation_profiles.backends.vllm import VLLMBackend

    return VLLMBackend.from_pretrained(model_dir, dtype="float32", max_model_len=2048,
                                       gpu_memory_utilization=0.3, **kw)


def test_vllm_steering_zero_equals_none_and_nonzero_differs(embedded_dir, requests_):
    backend = _vllm(embedded_dir, steering=_steering(0.0))
    zero = _texts(backend, requests_)
    backend.steering = None
    none = _texts(backend, requests_)
    assert zero == none
    backend.steering = _steering(4.0)
    steered = _texts(backend, requests_)
    assert steered != none
    backend.steering = None
    assert _texts(backend, requests_) == none   # hooks and prefix cache cleaned up


def test_hf_and_vllm_agree_greedy(embedded_dir, requests_):
    hf = HFBackend.from_pretrained(embedded_dir, dtype="float32", device="cuda",
                                   show_progress=False)
    a = _texts(hf, requests_)
    b = _texts(_vllm(embedded_dir), requests_)
    same = sum(x == y for x, y in zip(a, b, strict=True))
    prefix = [len(os.path.commonprefix([x, y])) / max(1, min(len(x), len(y)))
              for x, y in zip(a, b, strict=True)]
    print("HF vs vLLM identical:", same, "/", len(a), "prefix share:", prefix)
    assert same >= len(a) // 2 and min(prefix) >= 0.3


def test_lora_changes_outputs(embedded_dir, requests_, tmp_path):
    from peft import LoraConfig, get_peft_model

    from motivation_profiles.models.load import load_model

    base, _ = load_model(embedded_dir)
    torch.manual_seed(0)
    peft = get_peft_model(base, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    plain = _texts(_vllm(embedded_dir), requests_)
    adapted = _texts(_vllm(embedded_dir, adapter=tmp_path / "adapter"), requests_)
    assert adapted != plain
