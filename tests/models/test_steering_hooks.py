"""Steering hooks (steering.py) on the tiny random Llama: the hooked layers' outputs move by
exactly alpha * v at every position, prompt and cached decoding steps alike; alpha = 0 is the
unsteered model; hooks never outlive their block; PEFT wrappers and the HF backend's prefix
cache are steered the same way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from motivation_profiles.backends.base import ChatRequest, SamplingParams
from motivation_profiles.backends.hf import HFBackend
from motivation_profiles.models.hooks import Steering, steer
from motivation_profiles.models.layers import decoder_and_layers
from motivation_profiles.steering.apply import load_steering
from motivation_profiles.steering.vectors import save_vectors

D = 64  # tiny model hidden size (conftest.TINY_SPEC)


def _steering(layers, alpha, seed=0) -> Steering:
    rng = np.random.default_rng(seed)
    return Steering({layer: rng.normal(size=D).astype(np.float32) for layer in layers}, alpha)


class _Recorder:
    """Forward hook keeping every output of one layer (a list of [B, T, d] tensors)."""

    def __init__(self) -> None:
        self.outputs: list[torch.Tensor] = []

    def __call__(self, module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        self.outputs.append(h.detach().clone())


def _hook_count(model) -> int:
    """Forward hooks on the decoder layers. transformers itself may keep hooks there (it
    records hidden states with them once output_hidden_states was asked for), so tests compare
    against the count before steering, not against zero."""
    _, layers = decoder_and_layers(model)
    return sum(len(layer._forward_hooks) for layer in layers)


def _around(model, steering, run):
    """Run ``run()`` with recorders on every layer before and after the steering hooks:
    (before, after) lists per layer."""
    _, layers = decoder_and_layers(model)
    before = [_Recorder() for _ in layers]
    after = [_Recorder() for _ in layers]
    handles = [layer.register_forward_hook(r) for layer, r in zip(layers, before, strict=True)]
    try:
        with steer(model, steering):
            handles += [layer.register_forward_hook(r)
                        for layer, r in zip(layers, after, strict=True)]
            run()
    finally:
        for h in handles:
            h.remove()
    return before, after


def test_hooked_layers_move_by_exactly_alpha_v_at_all_positions(tiny_model):
    model, _ = tiny_model
    steering = _steering([1], 3.5)
    ids = torch.randint(0, model.config.vocab_size, (2, 11))
    hooks = _hook_count(model)
    with torch.inference_mode():
        before, after = _around(model, steering, lambda: model(input_ids=ids))
    delta = 3.5 * torch.as_tensor(steering.vectors[1])
    diff = after[1].outputs[0] - before[1].outputs[0]
    assert diff.shape == (2, 11, D)
    torch.testing.assert_close(diff, delta.expand_as(diff), rtol=0, atol=1e-5)
    # Layer 0 is not hooked: untouched.
    torch.testing.assert_close(after[0].outputs[0], before[0].outputs[0], rtol=0, atol=0)
    assert _hook_count(model) == hooks


def test_cached_decoding_steps_are_steered(tiny_model):
    """model.generate with a KV cache: the prompt forward and every one-token decoding step
    carry alpha * v at both hooked layers; a full uncached steered forward over prompt +
    generated tokens reproduces the greedy choices (so the cached prompt was steered too)."""
    model, _ = tiny_model
    steering = _steering([0, 1], -6.0, seed=1)
    prompt = torch.randint(0, model.config.vocab_size, (1, 9))
    out = {}

    def run():
        out["ids"] = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                    max_new_tokens=6, do_sample=False, use_cache=True,
                                    pad_token_id=0, eos_token_id=None)

    with torch.inference_mode():
        before, after = _around(model, steering, run)
    for layer in (0, 1):
        calls = list(zip(before[layer].outputs, after[layer].outputs, strict=True))
        assert len(calls) == 6  # prompt + 5 cached steps (the 6th token needs no forward)
        assert calls[0][0].shape[1] == 9 and all(b.shape[1] == 1 for b, _ in calls[1:])
        delta = -6.0 * torch.as_tensor(steering.vectors[layer])
        for b, a in calls:
            torch.testing.assert_close(a - b, delta.expand_as(b), rtol=0, atol=1e-5)
    full = out["ids"]
    with torch.inference_mode(), steer(model, steering):
        logits = model(input_ids=full[:, :-1]).logits
    greedy = logits[0, prompt.shape[1] - 1:].argmax(-1)
    assert greedy.tolist() == full[0, prompt.shape[1]:].tolist()
    with torch.inference_mode():
        plain = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                               max_new_tokens=6, do_sample=False, pad_token_id=0,
                               eos_token_id=None)
    assert plain.tolist() != full.tolist(), "alpha = -6 should change the greedy tokens"


def test_zero_multiplier_is_no_hook(tiny_model):
    model, _ = tiny_model
    ids = torch.randint(0, model.config.vocab_size, (1, 8))
    hooks = _hook_count(model)
    with torch.inference_mode():
        ref = model(input_ids=ids).logits
        with steer(model, _steering([0, 1], 0.0)):
            assert _hook_count(model) == hooks
            zero = model(input_ids=ids).logits
        with steer(model, None):
            none = model(input_ids=ids).logits
    assert torch.equal(ref, zero) and torch.equal(ref, none)


def test_hooks_removed_after_exception(tiny_model):
    model, _ = tiny_model
    hooks = _hook_count(model)
    with pytest.raises(RuntimeError, match="boom"), steer(model, _steering([0, 1], 2.0)):
        assert _hook_count(model) == hooks + 2
        raise RuntimeError("boom")
    assert _hook_count(model) == hooks


def test_bad_vectors_are_refused_before_any_hook(tiny_model, tmp_path):
    model, _ = tiny_model
    hooks = _hook_count(model)
    with pytest.raises(ValueError, match="layers \\[5\\] do not exist"), \
            steer(model, _steering([1, 5], 1.0)):
        pass
    wrong = Steering({0: np.ones(D + 1, dtype=np.float32)}, 1.0)
    with pytest.raises(ValueError, match="hidden size is 64"), steer(model, wrong):
        pass
    assert _hook_count(model) == hooks
    path = tmp_path / "v.safetensors"
    save_vectors(path, np.ones((2, D), dtype=np.float32), {"concept": "expectations"})
    with pytest.raises(ValueError, match="layers \\[2\\] out of range"):
        load_steering(path, [0, 2], 1.0)
    s = load_steering(path, [1], -2.0)
    assert s.layers == [1] and s.multiplier == -2.0
    assert s.identity != load_steering(path, [1], 2.0).identity
    assert s.identity == load_steering(path, [1], -2.0).identity


def test_peft_wrapped_model_is_steered(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from motivation_profiles.models.load import load_model

    base, _ = load_model(tiny_model_dir)
    torch.manual_seed(0)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"],
                                           init_lora_weights=False))
    steering = _steering([1], 2.0, seed=3)
    ids = torch.randint(0, base.config.vocab_size, (1, 7))
    hooks = _hook_count(peft)
    with torch.inference_mode():
        before, after = _around(peft, steering, lambda: peft(input_ids=ids))
    diff = after[1].outputs[0] - before[1].outputs[0]
    torch.testing.assert_close(diff, (2.0 * torch.as_tensor(steering.vectors[1])).expand_as(diff),
                               rtol=0, atol=1e-5)
    assert _hook_count(peft) == hooks


def test_backend_prefix_cache_is_steered_and_keyed_on_steering(tiny_model):
    """The HF backend's shared-prefix KV cache: steered generation with prefix reuse equals
    steered generation with full prefill, and a cache built under one steering is not reused
    under another."""
    model, tok = tiny_model
    system = "You are a careful assistant. " * 6
    reqs = [ChatRequest(f"r{i}", [{"role": "system", "content": system},
                                  {"role": "user", "content": f"Question number {i}?"}], seed=i)
            for i in range(3)]
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=8)
    steering = _steering([0, 1], 8.0, seed=4)

    def texts(**kw):
        b = HFBackend(model=model, tokenizer=tok, show_progress=False, **kw)
        return b, [c.text for c in b.generate(reqs, params)]

    _, reused = texts(steering=steering)
    _, full = texts(steering=steering, reuse_prefix=False)
    plain_backend, plain = texts()
    assert reused == full
    assert reused != plain
    # Same backend object, steering switched on after an unsteered call: recomputed prefix.
    plain_backend.steering = steering
    assert [c.text for c in plain_backend.generate(reqs, params)] == reused
    plain_backend.steering = None
    assert [c.text for c in plain_backend.generate(reqs, params)] == plain
