"""The vLLM backend's CPU-testable parts, with vLLM replaced by a stand-in that runs the tiny
random Llama: request and sampling mapping, steering hooks installed on the workers' decoder
layers for exactly one generate call (and the prefix cache reset around it), vLLM-style
``(hidden, residual)`` layer outputs, adapter ranks. The real engine is exercised by
tests/backends/test_vllm_gpu.py on a CUDA machine."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from motivation_profiles.backends.base import ChatRequest, SamplingParams
from motivation_profiles.backends.hf import HFBackend
from motivation_profiles.backends.vllm import (
    _HANDLES,
    VLLMBackend,
    VLLMUnavailable,
    adapter_rank,
    install_steering,
    max_lora_rank,
    remove_steering,
    require_vllm,
)
from motivation_profiles.models.hooks import Steering


@dataclass
class FakeSamplingParams:
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    stop: Any
    include_stop_str_in_output: bool
    skip_special_tokens: bool


@pytest.fixture
def fake_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    return mod


class FakeLLM:
    """``LLM.apply_model`` / ``generate`` / ``reset_prefix_cache`` over one in-process model:
    greedy decoding with transformers, so hooks installed through apply_model act on it."""

    def __init__(self, model, tok):
        self.model, self.tok = model, tok
        self.resets = 0
        self.hooks_during_generate: list[int] = []
        self.sampling: list[FakeSamplingParams] = []

    def apply_model(self, fn):
        return [fn(self.model)]

    def reset_prefix_cache(self):
        self.resets += 1

    def generate(self, prompts, sampling, lora_request=None, use_tqdm=False):
        self.hooks_during_generate.append(len(getattr(self.model, _HANDLES, [])))
        self.sampling += list(sampling)
        outs = []
        for p, sp in zip(prompts, sampling, strict=True):
            ids = torch.tensor([p["prompt_token_ids"]])
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                          max_new_tokens=sp.max_tokens, do_sample=False,
                                          pad_token_id=self.tok.pad_token_id,
                                          eos_token_id=None)
            new = gen[0, ids.shape[1]:].tolist()
            text = self.tok.decode(new, skip_special_tokens=True)
            o = types.SimpleNamespace(text=text, token_ids=new, finish_reason="length")
            outs.append(types.SimpleNamespace(outputs=[o]))
        return outs


class FixedLengthHF(HFBackend):
    @property
    def eos_ids(self):
        return {10**9}


def _requests():
    return [ChatRequest(f"r{i}", [{"role": "user", "content": f"Hello number {i}"}], seed=i)
            for i in range(3)]


def test_steered_vllm_path_matches_hf_backend(tiny_model, fake_vllm):
    """Same prompts, greedy, same steering: the vLLM code path (hooks shipped through
    apply_model) and the HF backend give the same tokens; hooks exist only during generate
    and the prefix cache is reset on both transitions."""
    model, tok = tiny_model
    rng = np.random.default_rng(0)
    steering = Steering({1: rng.normal(size=64).astype(np.float32)}, 6.0)
    params = SamplingParams(temperature=0.0, top_p=0.9, max_new_tokens=6, stop=("</OUTPUT>",))
    llm = FakeLLM(model, tok)
    backend = VLLMBackend(llm=llm, tokenizer=tok, max_model_len=2048, steering=steering)
    got = backend.generate(_requests(), params)
    hf = FixedLengthHF(model=model, tokenizer=tok, show_progress=False, steering=steering)
    want = hf.generate(_requests(), params)
    assert [c.text for c in got] == [c.text for c in want]
    assert [c.prompt_tokens for c in got] == [c.prompt_tokens for c in want]
    assert llm.hooks_during_generate == [1] and getattr(model, _HANDLES) == []
    assert llm.resets == 2
    plain = VLLMBackend(llm=FakeLLM(model, tok), tokenizer=tok, max_model_len=2048)
    unsteered = plain.generate(_requests(), params)
    assert [c.text for c in unsteered] != [c.text for c in got]
    assert plain.llm.hooks_during_generate == [0] and plain.llm.resets == 0
    sp = llm.sampling[0]
    assert (sp.seed, sp.max_tokens, sp.stop, sp.top_p) == (0, 6, ["</OUTPUT>"], 1.0)
    assert sp.include_stop_str_in_output


def test_hooks_removed_when_generate_raises(tiny_model, fake_vllm):
    model, tok = tiny_model

    class Failing(FakeLLM):
        def generate(self, *a, **k):
            raise RuntimeError("engine died")

    llm = Failing(model, tok)
    hooks = sum(len(layer._forward_hooks) for layer in model.model.layers)
    steering = Steering({0: np.ones(64, dtype=np.float32)}, 1.0)
    backend = VLLMBackend(llm=llm, tokenizer=tok, steering=steering)
    with pytest.raises(RuntimeError, match="engine died"):
        backend.generate(_requests(), SamplingParams(0.0, 1.0, 4))
    assert getattr(model, _HANDLES) == [] and llm.resets == 2
    assert sum(len(layer._forward_hooks) for layer in model.model.layers) == hooks


def test_prompt_over_context_is_length_without_generation(tiny_model, fake_vllm):
    model, tok = tiny_model
    llm = FakeLLM(model, tok)
    backend = VLLMBackend(llm=llm, tokenizer=tok, max_model_len=8)
    long = [ChatRequest("x", [{"role": "user", "content": "word " * 50}], seed=0)]
    out = backend.generate(long, SamplingParams(0.0, 1.0, 4))
    assert out[0].finish_reason == "length" and out[0].text == "" and llm.sampling == []


class VLLMStyleLayer(torch.nn.Module):
    """A decoder layer that returns (hidden_states, residual) like vLLM's; the residual
    stream is their sum."""

    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)

    def forward(self, hidden, residual):
        residual = hidden + residual
        return self.lin(residual), residual


def test_worker_hooks_move_the_residual_sum_by_delta():
    torch.manual_seed(0)
    d = 16
    model = types.SimpleNamespace()
    model.model = torch.nn.Module()
    model.model.layers = torch.nn.ModuleList([VLLMStyleLayer(d) for _ in range(3)])
    x, r = torch.randn(5, d), torch.randn(5, d)
    layer = model.model.layers[1]
    h0, r0 = layer(x, r)
    delta = np.arange(d, dtype=np.float32)
    assert install_steering(model, {1: delta}) == 1
    h1, r1 = layer(x, r)
    torch.testing.assert_close((h1 + r1) - (h0 + r0), torch.as_tensor(delta).expand(5, d))
    assert remove_steering(model) == 1
    h2, _ = layer(x, r)
    assert torch.equal(h2, h0)
    with pytest.raises(ValueError, match="layer 7"):
        install_steering(model, {7: delta})


def test_adapter_rank_and_vllm_rank(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 12}))
    assert adapter_rank(tmp_path) == 12
    assert max_lora_rank(12) == 16 and max_lora_rank(8) == 8 and max_lora_rank(300) == 320
    with pytest.raises(ValueError, match="largest"):
        max_lora_rank(4096)
    with pytest.raises(ValueError, match="adapter_config.json"):
        adapter_rank(tmp_path / "missing")


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(VLLMUnavailable, match="backend 'vllm' needs the vllm package"):
        require_vllm()
