"""The hf backend on a tiny random-weight Llama, and the rollout loop on a scripted backend."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from motivation_profiles.backends.base import (
    ChatRequest,
    Completion,
    SamplingParams,
    batch_seed,
    cut_at_stop,
    longest_common_prefix,
)
from motivation_profiles.backends.hf import HFBackend
from motivation_profiles.rollouts.protocol import PromptSet
from motivation_profiles.rollouts.run import run_rollouts

SYSTEM = "You are a test assistant. " * 12


def _requests(n=5, seed=0):
    users = ["hi", "write a long poem about the sea and the sky", "ok",
             "tell me three things about rivers", "bye now", "a b c d e f g"]
    return [
        ChatRequest(f"r{i}", ({"role": "system", "content": SYSTEM},
                              {"role": "user", "content": users[i % len(users)]}), seed)
        for i in range(n)
    ]


def _backend(tiny_model, **kw):
    model, tok = tiny_model
    return HFBackend(model=model, tokenizer=tok, show_progress=False, **kw)


def test_prefix_reuse_matches_full_prefill_greedy(tiny_model):
    """Same greedy tokens with the shared prefix's KV cache reused as with full prefill,
    across batches of unequal prompt lengths (padding sits between prefix and suffix)."""
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=12)
    reqs = _requests(5)
    reuse = _backend(tiny_model, batch_size=2, reuse_prefix=True)
    full = _backend(tiny_model, batch_size=2, reuse_prefix=False)
    a, b = reuse.generate(reqs, params), full.generate(reqs, params)
    assert reuse._prefix is not None and len(reuse._prefix[0]) >= 16  # the cache was used
    assert full._prefix is None
    assert [c.text for c in a] == [c.text for c in b]
    assert [c.request_id for c in a] == [r.request_id for r in reqs]
    # and the same as generating each request alone (batching does not change greedy output)
    alone = [_backend(tiny_model, batch_size=1, reuse_prefix=False).generate([r], params)[0]
             for r in reqs]
    assert [c.text for c in alone] == [c.text for c in a]


def test_length_stop_and_token_counts(tiny_model):
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=5)
    out = _backend(tiny_model).generate(_requests(2), params)
    for c in out:
        # a random model rarely emits EOS in 5 tokens; when it does not, the budget ran out
        if c.finish_reason == "length":
            assert c.completion_tokens == 5
        assert c.prompt_tokens > 0


def test_prompt_longer_than_context_is_length_without_generation(tiny_model):
    backend = _backend(tiny_model, max_model_len=40)
    out = backend.generate(_requests(1), SamplingParams(0.0, 1.0, 8))
    assert out[0].finish_reason == "length" and out[0].completion_tokens == 0
    assert out[0].text == ""


def test_seeded_sampling_is_reproducible(tiny_model):
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=10)
    b = _backend(tiny_model, batch_size=4)
    first = [c.text for c in b.generate(_requests(4, seed=0), params)]
    again = [c.text for c in _backend(tiny_model, batch_size=4).generate(_requests(4, seed=0),
                                                                          params)]
    other = [c.text for c in b.generate(_requests(4, seed=1), params)]
    assert first == again
    assert first != other


def test_helpers():
    assert longest_common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert longest_common_prefix([]) == 0
    assert cut_at_stop("a </OUTPUT> tail", ["</OUTPUT>"]) == ("a </OUTPUT>", True)
    assert cut_at_stop("no stop", ["</OUTPUT>"]) == ("no stop", False)
    r = _requests(2)
    assert batch_seed(r) == batch_seed(list(r))
    assert batch_seed(r) != batch_seed(_requests(2, seed=1))


# ----------------------------------------------------------------- the rollout loop


@dataclass
class ScriptedBackend:
    """Returns scripted turns per goal; records every request it was asked for."""

    script: dict[str, list[tuple[str, str]]]
    name: str = "scripted"
    calls: list[ChatRequest] = field(default_factory=list)

    def generate(self, requests, params):
        out = []
        for r in requests:
            self.calls.append(r)
            goal = r.messages[1]["content"]
            key = next(k for k in self.script if k in goal)
            turn = sum(1 for m in r.messages if m["role"] == "assistant")
            text, finish = self.script[key][turn]
            out.append(Completion(r.request_id, text, finish, 10, 3))
        return out


@pytest.fixture
def prompts(repo):
    return PromptSet.from_config({
        "system": repo / "resources/prompts/helpful_only_compact.txt",
        "user_template": repo / "resources/prompts/user_turn.txt",
        "tier_values": {"monitored": "True", "unmonitored": "False"},
        "continuation": "<NEXT/>",
    })


GOALS = pl.DataFrame({"goal_id": [0, 1, 2], "goal": ["alpha task", "beta task", "gamma task"]})
SCRIPT = {
    # turn 1 ends inside the reasoning (EOS): continued with <NEXT/>, then answers
    "alpha": [("<SCRATCHPAD_REASONING>thinking", "stop"),
              ("more</SCRATCHPAD_REASONING><OUTPUT><request_fully_accepted/> ok</OUTPUT>",
               "stop")],
    # answers at once
    "beta": [("<SCRATCHPAD_REASONING>no</SCRATCHPAD_REASONING><OUTPUT><rejected/></OUTPUT>",
              "stop")],
    # never answers: bounded by max_turns
    "gamma": [("<SCRATCHPAD_REASONING>a", "stop"), ("b", "stop"), ("c", "stop")],
}
PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16, stop=("</OUTPUT>",))


def test_rollout_loop_continuation_and_bound(prompts):
    backend = ScriptedBackend(SCRIPT)
    df = run_rollouts(backend, prompts, GOALS, seeds=[0], params=PARAMS, max_turns=2,
                      meta={"model": "m", "condition": "baseline"})
    assert len(df) == 6  # 3 goals x 2 tiers x 1 seed
    by = {(r["goal_id"], r["tier"]): r for r in df.iter_rows(named=True)}
    assert len(by) == len(df)
    alpha = by[(0, "monitored")]
    assert alpha["n_turns"] == 2 and alpha["outcome"] == "compliant"
    assert list(alpha["finish_reasons"]) == ["stop", "stop"]
    assert by[(1, "unmonitored")]["outcome"] == "rejected"
    assert by[(1, "unmonitored")]["n_turns"] == 1
    gamma = by[(2, "monitored")]
    assert gamma["n_turns"] == 2 and gamma["outcome"] == "unparseable"
    # the continuation request carries the first turn and a <NEXT/> user turn
    second = [r for r in backend.calls if r.request_id.startswith("0-monitored-0-t1")][0]
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user"]
    assert second.messages[-1]["content"] == "<NEXT/>"
    assert second.messages[2]["content"] == "<SCRATCHPAD_REASONING>thinking"
    # every row carries the hash of its own opening prompt; tiers differ
    assert by[(0, "monitored")]["prompt_hash"] != by[(0, "unmonitored")]["prompt_hash"]
    assert set(df["model"]) == {"m"}


def test_length_stop_is_truncated_not_continued(prompts):
    script = {k: [("<SCRATCHPAD_REASONING>long", "length")] for k in ("alpha", "beta", "gamma")}
    backend = ScriptedBackend(script)
    df = run_rollouts(backend, prompts, GOALS, seeds=[0], params=PARAMS, max_turns=4,
                      meta={})
    assert set(df["outcome"]) == {"truncated"}
    assert set(df["n_turns"]) == {1}


def test_resume_skips_finished_groups(prompts, tmp_path):
    ckpt = tmp_path / "ckpt"
    first = ScriptedBackend(SCRIPT)
    df1 = run_rollouts(first, prompts, GOALS, seeds=[0, 1], params=PARAMS, max_turns=2,
                       meta={}, checkpoint_dir=ckpt, checkpoint_key="k1")
    assert sorted(p.name for p in ckpt.glob("*.parquet")) == [
        "monitored-0.parquet", "monitored-1.parquet", "unmonitored-0.parquet",
        "unmonitored-1.parquet"]
    # simulate a job killed after three groups: drop one shard, rerun with the same key
    (ckpt / "unmonitored-1.parquet").unlink()
    second = ScriptedBackend(SCRIPT)
    df2 = run_rollouts(second, prompts, GOALS, seeds=[0, 1], params=PARAMS, max_turns=2,
                       meta={}, checkpoint_dir=ckpt, checkpoint_key="k1")
    assert {r.request_id.split("-")[1:3] == ["unmonitored", "1"] for r in second.calls} == {True}
    assert_frame_equal(df1, df2)
    # a different key (changed params or inputs) discards the stale checkpoint
    third = ScriptedBackend(SCRIPT)
    run_rollouts(third, prompts, GOALS, seeds=[0, 1], params=PARAMS, max_turns=2, meta={},
                 checkpoint_dir=ckpt, checkpoint_key="k2")
    assert len({r.request_id.rsplit("-", 1)[0] for r in third.calls}) == 12
