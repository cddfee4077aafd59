"""The vLLM backend's CPU-testable parts, with vLLM replaced by a stand-in that runs the tiny
random Llama: request and sampling mapping (per-request seeds from ``stream_seed``), steering
hooks installed on the workers' decoder layers for exactly one generate call (and the prefix
cache reset around it), vLLM's pickle fallback enabled only while the engine is built and
around its utility calls (``apply_model`` and the prefix-cache reset: the real engine's reply
to the reset cannot be decoded without it), prompts too long for an answer refused before
generating, vLLM-style ``(hidden, residual)`` layer outputs, adapter ranks. The real engine is
exercised by tests/backends/test_vllm_engine.py (vLLM's CPU build, ``make test-vllm``) and
tests/backends/test_vllm_gpu.py on a CUDA machine."""

from __future__ import annotations

import json
import os
import sys
import types
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

from motivation_profiles.backends.base import (
    ChatRequest,
    PromptTooLongError,
    SamplingParams,
    stream_seed,
)
from motivation_profiles.backends.hf import HFBackend
from motivation_profiles.backends.vllm import (
    _HANDLES,
    INSECURE_SERIALIZATION,
    VLLMBackend,
    VLLMUnavailable,
    adapter_rank,
    install_steering,
    max_lora_rank,
    remove_steering,
    require_vllm,
    scope_utility_calls,
)
from motivation_profiles.models.hooks import Steering


@dataclass
class FakeSamplingParams:
    n: int
    temperature: float
    max_tokens: int
    top_p: float = 1.0
    seed: int | None = None
    stop: Any = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    prompt_logprobs: int | None = None


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
        self.env_during_apply: list[str | None] = []
        self.env_during_reset: list[str | None] = []
        self.generate_calls = 0

    def apply_model(self, fn):
        self.env_during_apply.append(os.environ.get(INSECURE_SERIALIZATION))
        return [fn(self.model)]

    def reset_prefix_cache(self):
        self.env_during_reset.append(os.environ.get(INSECURE_SERIALIZATION))
        self.resets += 1

    def generate(self, prompts, sampling, lora_request=None, use_tqdm=False):
        self.generate_calls += 1
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
            prompt_logprobs = None
            if sp.prompt_logprobs is not None:
                # vLLM's shape: None for the first token, then {token id: Logprob} holding
                # the prompt token itself (prompt_logprobs=0: nothing else)
                assert sp.prompt_logprobs == 0
                with torch.inference_mode():
                    lp = torch.log_softmax(self.model(ids).logits[0].float(), -1)
                toks = p["prompt_token_ids"]
                prompt_logprobs = [None] + [
                    {toks[n]: types.SimpleNamespace(logprob=float(lp[n - 1, toks[n]]))}
                    for n in range(1, len(toks))]
            outs.append(types.SimpleNamespace(outputs=[o], prompt_logprobs=prompt_logprobs))
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
    assert (sp.max_tokens, sp.stop, sp.top_p) == (6, ["</OUTPUT>"], 1.0)
    assert sp.include_stop_str_in_output
    # each request's vLLM seed is its stream seed, as in the hf backend (not its id or slot)
    assert [s.seed for s in llm.sampling] == [stream_seed(r) for r in _requests()]
    assert len({s.seed for s in llm.sampling}) == 3


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


def test_failed_prefix_cache_reset_is_an_error(tiny_model, fake_vllm):
    """vLLM's reset_prefix_cache returns False when it could not reset; serving KV computed
    without the hooks under them would be silently wrong, so that is an error."""
    model, tok = tiny_model

    class NoReset(FakeLLM):
        def reset_prefix_cache(self):
            super().reset_prefix_cache()
            return False

    llm = NoReset(model, tok)
    steering = Steering({0: np.ones(64, dtype=np.float32)}, 1.0)
    backend = VLLMBackend(llm=llm, tokenizer=tok, steering=steering)
    with pytest.raises(RuntimeError, match="did not reset its prefix cache"):
        backend.generate(_requests(), SamplingParams(0.0, 1.0, 2))
    assert llm.generate_calls == 0


def test_prompt_without_room_for_an_answer_fails_before_generating(tiny_model, fake_vllm):
    model, tok = tiny_model
    llm = FakeLLM(model, tok)
    long = ChatRequest("x", [{"role": "user", "content": "word " * 50}], seed=0)
    n = len(VLLMBackend(llm=llm, tokenizer=tok).encode(long.messages))
    steering = Steering({0: np.ones(64, dtype=np.float32)}, 1.0)
    backend = VLLMBackend(llm=llm, tokenizer=tok, max_model_len=n + 15, steering=steering)
    with pytest.raises(PromptTooLongError,
                       match=rf"'x': a prompt of {n} tokens .*\(16 new tokens\).*"
                             rf"max_model_len {n + 15}"):
        backend.generate([_requests()[0], long], SamplingParams(1.0, 1.0, 64))
    # nothing reached the engine: no sampling params, no generate, no hooks
    assert llm.sampling == [] and llm.generate_calls == 0 and llm.env_during_apply == []
    backend.max_model_len = n + 16   # room for exactly the smallest useful answer
    out = backend.generate([long], SamplingParams(0.0, 1.0, 64))
    assert llm.sampling[-1].max_tokens == 16 and out[0].prompt_tokens == n
    # a continuation that may fill the context: empty "length" completion, the rest runs
    backend.max_model_len = n
    cont = ChatRequest("x", long.messages, 0, prompt_overflow="length")
    first, out = backend.generate([_requests()[0], cont], SamplingParams(0.0, 1.0, 4))
    assert (out.text, out.finish_reason, out.completion_tokens) == ("", "length", 0)
    assert first.completion_tokens == 4 and llm.sampling[-1].max_tokens == 4


def test_pickle_fallback_enabled_only_around_utility_calls(tiny_model, fake_vllm, monkeypatch):
    """Steering ships callables through apply_model, which needs vLLM's pickle fallback; a
    steerable engine's reply to reset_prefix_cache needs it too (on the real engine the reset
    otherwise never returns): the variable is "1" during each of these calls and restored
    afterwards, whether it was unset or had another value, also when generation fails."""
    model, tok = tiny_model
    steering = Steering({0: np.ones(64, dtype=np.float32)}, 1.0)
    monkeypatch.delenv(INSECURE_SERIALIZATION, raising=False)
    llm = FakeLLM(model, tok)
    VLLMBackend(llm=llm, tokenizer=tok, steering=steering).generate(
        _requests(), SamplingParams(0.0, 1.0, 2))
    assert llm.env_during_apply == ["1", "1"]          # install, then remove
    assert llm.env_during_reset == ["1", "1"]          # after each
    assert INSECURE_SERIALIZATION not in os.environ
    monkeypatch.setenv(INSECURE_SERIALIZATION, "0")

    class Failing(FakeLLM):
        def generate(self, *a, **k):
            raise RuntimeError("engine died")

    failing = Failing(model, tok)
    with pytest.raises(RuntimeError, match="engine died"):
        VLLMBackend(llm=failing, tokenizer=tok, steering=steering).generate(
            _requests(), SamplingParams(0.0, 1.0, 2))
    assert failing.env_during_apply == failing.env_during_reset == ["1", "1"]
    assert os.environ[INSECURE_SERIALIZATION] == "0"


class FakeClient:
    """vLLM's multiprocess engine client: every utility call goes through ``call_utility``."""

    def __init__(self):
        self.env_during_call: list[tuple[str, str | None]] = []

    def call_utility(self, method, *args):
        self.env_during_call.append((method, os.environ.get(INSECURE_SERIALIZATION)))
        return True


def test_scope_utility_calls_wraps_the_engine_client(monkeypatch):
    """Every utility call on the wrapped client (a user's ``llm.reset_prefix_cache()`` too)
    runs with the variable set and leaves the environment as it was; wrapping twice wraps
    once; an object without a multiprocess client is left alone."""
    client = FakeClient()
    llm = types.SimpleNamespace(llm_engine=types.SimpleNamespace(engine_core=client))
    scope_utility_calls(llm)
    scope_utility_calls(llm)
    monkeypatch.delenv(INSECURE_SERIALIZATION, raising=False)
    assert client.call_utility("reset_prefix_cache", False, False) is True
    assert INSECURE_SERIALIZATION not in os.environ
    monkeypatch.setenv(INSECURE_SERIALIZATION, "0")
    client.call_utility("collective_rpc")
    assert os.environ[INSECURE_SERIALIZATION] == "0"
    assert client.env_during_call == [("reset_prefix_cache", "1"), ("collective_rpc", "1")]
    scope_utility_calls(types.SimpleNamespace())                     # nothing to wrap


def test_from_pretrained_scopes_the_pickle_fallback_to_building_the_engine(
        tiny_model, tiny_model_dir, fake_vllm, monkeypatch):
    """vLLM's engine processes inherit the variable when LLM(...) spawns them: it is set while
    a steerable engine is built (eager mode too), and not at all for an unsteered one; either
    way the process environment is as before afterwards. An active steering on an engine built
    without one is a clear error, not hooks that silently do nothing."""
    model, tok = tiny_model
    built: list[tuple[str | None, bool]] = []

    class LLM(FakeLLM):
        def __init__(self, **kwargs):
            built.append((os.environ.get(INSECURE_SERIALIZATION), kwargs["enforce_eager"]))
            super().__init__(model, tok)
            self.llm_engine = types.SimpleNamespace(engine_core=FakeClient())

    fake_vllm.LLM = LLM
    monkeypatch.delenv(INSECURE_SERIALIZATION, raising=False)
    zero = Steering({0: np.ones(64, dtype=np.float32)}, 0.0)
    steered = VLLMBackend.from_pretrained(tiny_model_dir, steering=zero)
    plain = VLLMBackend.from_pretrained(tiny_model_dir)
    assert built == [("1", True), (None, False)]
    assert INSECURE_SERIALIZATION not in os.environ
    assert steered.steerable and not plain.steerable
    # a steerable engine's client is scoped (its replies need the variable); a plain one not
    monkeypatch.setenv(INSECURE_SERIALIZATION, "0")
    steered.llm.llm_engine.engine_core.call_utility("list_loras")
    plain.llm.llm_engine.engine_core.call_utility("list_loras")
    assert steered.llm.llm_engine.engine_core.env_during_call == [("list_loras", "1")]
    assert plain.llm.llm_engine.engine_core.env_during_call == [("list_loras", "0")]
    monkeypatch.delenv(INSECURE_SERIALIZATION)
    # a steerable engine can be given an active steering later
    steered.steering = Steering({0: np.ones(64, dtype=np.float32)}, 2.0)
    steered.generate(_requests(), SamplingParams(0.0, 1.0, 2))
    assert steered.llm.env_during_apply == ["1", "1"]
    plain.steering = steered.steering
    with pytest.raises(RuntimeError, match="built without steering"):
        plain.generate(_requests(), SamplingParams(0.0, 1.0, 2))
    assert plain.llm.generate_calls == 0 and plain.llm.env_during_apply == []


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
    assert max_lora_rank(1) == 1 and max_lora_rank(2) == 8   # vLLM 0.32 accepts rank 1
    with pytest.raises(ValueError, match="largest"):
        max_lora_rank(4096)
    with pytest.raises(ValueError, match="adapter_config.json"):
        adapter_rank(tmp_path / "missing")


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(VLLMUnavailable, match="backend 'vllm' needs the vllm package"):
        require_vllm()


def test_continuation_logprobs_match_hf_backend(tiny_model, fake_vllm):
    """Prompt log-probs summed over each candidate's tokens: the same numbers as the hf
    backend's forward pass, steered through the workers' hooks like generate; a request that
    cannot fit is refused, or left None when it may overflow."""
    model, tok = tiny_model
    steering = Steering({1: np.random.default_rng(1).normal(size=64).astype(np.float32)}, 4.0)
    cands = ["<request_fully_accepted/>", "<rejected/>"]
    reqs = [ChatRequest(f"s{i}", ({"role": "user", "content": f"Question {i}?"},
                                  {"role": "assistant", "content": "<OUTPUT>\n"}), seed=i)
            for i in range(3)]
    llm = FakeLLM(model, tok)
    backend = VLLMBackend(llm=llm, tokenizer=tok, max_model_len=2048, steering=steering)
    got = backend.continuation_logprobs(reqs, cands)
    hf = HFBackend(model=model, tokenizer=tok, show_progress=False, steering=steering)
    want = hf.continuation_logprobs(reqs, cands)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5, atol=1e-4)
    assert llm.hooks_during_generate == [1] and getattr(model, _HANDLES) == []
    assert {(s.max_tokens, s.prompt_logprobs, s.temperature) for s in llm.sampling} == {(1, 0, 0.0)}
    unsteered = VLLMBackend(llm=FakeLLM(model, tok), tokenizer=tok).continuation_logprobs(
        reqs, cands)
    assert not np.allclose(np.array(unsteered), np.array(got))
    n = len(backend.encode(reqs[0].messages))
    backend.max_model_len = n
    with pytest.raises(PromptTooLongError, match="'s0'"):
        backend.continuation_logprobs(reqs[:1], cands)
    calls = llm.generate_calls
    overflow = ChatRequest("s0", reqs[0].messages, 0, prompt_overflow="length")
    assert backend.continuation_logprobs([overflow], cands) == [None]
    assert llm.generate_calls == calls
