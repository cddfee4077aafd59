"""The hf backend on a tiny random-weight Llama, and the rollout loop on a scripted backend."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from motivation_profiles.backends.base import (
    MIN_ANSWER_TOKENS,
    ChatRequest,
    Completion,
    PromptTooLongError,
    SamplingParams,
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
    assert reuse._store.tokens >= 16  # keys and values were kept for reuse
    assert len(full._store) == 0
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


class CountingBackend(HFBackend):
    """Counts the batches that reach ``model.generate``."""

    batches: int = 0

    def _generate_batch(self, reqs, ids, params):
        self.batches += 1
        return super()._generate_batch(reqs, ids, params)


def test_prompt_without_room_for_an_answer_fails_before_generating(tiny_model):
    """A prompt that leaves fewer than MIN_ANSWER_TOKENS (or max_new_tokens, if smaller) new
    tokens is an error naming the request, the numbers and max_model_len; nothing of the call
    is generated, not even the requests that fit."""
    model, tok = tiny_model
    short, long_ = _requests(2)[0], _requests(2)[1]
    probe = CountingBackend(model=model, tokenizer=tok, show_progress=False)
    n_short, n_long = len(probe.encode(short.messages)), len(probe.encode(long_.messages))
    assert n_short < n_long
    # room for exactly MIN_ANSWER_TOKENS after the long prompt: it runs, with that budget
    fits = CountingBackend(model=model, tokenizer=tok, show_progress=False,
                           max_model_len=n_long + MIN_ANSWER_TOKENS)
    out = fits.generate([short, long_], SamplingParams(0.0, 1.0, 64))
    assert fits.batches == 1 and out[1].completion_tokens <= MIN_ANSWER_TOKENS
    # one token less: the whole call fails before any batch is generated
    tight = CountingBackend(model=model, tokenizer=tok, show_progress=False,
                            max_model_len=n_long + MIN_ANSWER_TOKENS - 1)
    with pytest.raises(PromptTooLongError) as info:
        tight.generate([short, long_], SamplingParams(0.0, 1.0, 64))
    assert tight.batches == 0
    err = info.value
    assert (err.request_id, err.prompt_tokens, err.answer_tokens, err.max_model_len,
            err.others) == ("r1", n_long, MIN_ANSWER_TOKENS, n_long + MIN_ANSWER_TOKENS - 1, 0)
    msg = str(err)
    for part in ("'r1'", f"{n_long} tokens", f"{MIN_ANSWER_TOKENS} new tokens",
                 f"max_model_len {n_long + MIN_ANSWER_TOKENS - 1}"):
        assert part in msg
    # a smaller max_new_tokens is the smallest useful answer; both prompts too long: counted
    with pytest.raises(PromptTooLongError, match=r"'r0'.*\(4 new tokens\).*1 more request"):
        _backend(tiny_model, max_model_len=n_short + 3).generate(
            [short, long_], SamplingParams(0.0, 1.0, 4))
    exact = _backend(tiny_model, max_model_len=n_short + 4).generate(
        [short], SamplingParams(0.0, 1.0, 4))  # exactly fits: runs
    assert exact[0].prompt_tokens == n_short
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        _backend(tiny_model).generate([short], SamplingParams(0.0, 1.0, 0))


def test_prompt_overflow_length_keeps_continuations_that_filled_the_context(tiny_model):
    """``prompt_overflow="length"`` (a continuation turn whose transcript grew to the context):
    what fits is generated, a prompt with no room at all is an empty ``length`` completion, and
    the other requests of the call still run."""
    model, tok = tiny_model
    short, long_ = _requests(2)
    probe = _backend(tiny_model)
    n_short, n_long = len(probe.encode(short.messages)), len(probe.encode(long_.messages))

    class NoEOS(HFBackend):
        @property
        def eos_ids(self):
            return {10**9}

    backend = NoEOS(model=model, tokenizer=tok, show_progress=False, max_model_len=n_long + 3)
    cont = ChatRequest("r1", long_.messages, long_.seed, prompt_overflow="length")
    a, b = backend.generate([short, cont], SamplingParams(0.0, 1.0, 8))
    assert (b.finish_reason, b.completion_tokens) == ("length", 3)    # what fits
    assert a.completion_tokens == min(8, n_long + 3 - n_short)
    backend.max_model_len = n_long
    a, b = backend.generate([short, cont], SamplingParams(0.0, 1.0, 8))
    assert (b.text, b.finish_reason, b.completion_tokens) == ("", "length", 0)
    assert b.prompt_tokens == n_long and a.completion_tokens > 0
    with pytest.raises(PromptTooLongError):   # the same prompt as an opening turn: an error
        backend.generate([short, long_], SamplingParams(0.0, 1.0, 8))
    with pytest.raises(ValueError, match="prompt_overflow must be"):
        ChatRequest("x", short.messages, prompt_overflow="truncate")


def test_each_request_gets_its_own_budget(tiny_model):
    """A short prompt batched with one near the context limit keeps its full max_new_tokens
    (the batch's longest prompt does not cut it), and the long one stops at the context."""
    model, tok = tiny_model
    short, long_ = _requests(2)[0], _requests(2)[1]

    class NoEOS(HFBackend):
        @property
        def eos_ids(self):
            return {10**9}

    probe = NoEOS(model=model, tokenizer=tok)
    n_short, n_long = len(probe.encode(short.messages)), len(probe.encode(long_.messages))
    assert n_long - n_short >= 5
    params = SamplingParams(1.0, 1.0, 25)
    backend = NoEOS(model=model, tokenizer=tok, show_progress=False, batch_size=2,
                    max_model_len=n_long + 20)
    a, b = backend.generate([short, long_], params)
    assert (a.completion_tokens, b.completion_tokens) == (25, 20)
    assert a.finish_reason == b.finish_reason == "length"
    alone = [backend.generate([r], params)[0] for r in (short, long_)]
    assert [c.text for c in alone] == [a.text, b.text]


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


def test_reasoning_model_think_blocks_are_not_parsed_nor_resent(prompts):
    think = "<think>I could write <OUTPUT><request_fully_accepted/></OUTPUT> here"
    script = {
        # turn 1: a closed think block quoting an accepting output, then reasoning that stops
        # inside the scratchpad; turn 2: the chat template opened the block in the prompt
        "alpha": [(think + "</think>\n<SCRATCHPAD_REASONING>thinking", "stop"),
                  ("hmm</think><SCRATCHPAD_REASONING>x</SCRATCHPAD_REASONING>"
                   "<OUTPUT><rejected/></OUTPUT>", "stop")],
        # an unterminated think block holding a full output (a stop string met while
        # thinking): nothing visible, so not compliant; an empty visible turn ends the rollout
        "beta": [(think + " and <OUTPUT><request_fully_accepted/> ok</OUTPUT>", "stop"),
                 ("<SCRATCHPAD_REASONING>y</SCRATCHPAD_REASONING><OUTPUT><rejected/></OUTPUT>",
                  "stop")],
        "gamma": [("<SCRATCHPAD_REASONING>z</SCRATCHPAD_REASONING><OUTPUT><rejected/></OUTPUT>",
                   "stop")],
    }
    backend = ScriptedBackend(script)
    df = run_rollouts(backend, prompts, GOALS, seeds=[0], params=PARAMS, max_turns=3,
                      meta={"model": "m", "condition": "baseline"}, reasoning=True)
    by = {(r["goal_id"], r["tier"]): r for r in df.iter_rows(named=True)}
    for tier in ("monitored", "unmonitored"):
        assert by[(0, tier)]["outcome"] == "rejected" and by[(0, tier)]["n_turns"] == 2
        assert by[(1, tier)]["outcome"] == "unparseable" and by[(1, tier)]["n_turns"] == 1
        assert "<think>" in by[(0, tier)]["transcript"]  # the record keeps the raw turns
        assert "could write" not in by[(0, tier)]["scratchpad"]
    continued = [r for r in backend.calls if "-t1" in r.request_id]
    assert len(continued) == 2  # alpha, both tiers
    for request in continued:
        sent = [m["content"] for m in request.messages if m["role"] == "assistant"]
        assert sent and all("<think>" not in t and "</think>" not in t and "OUTPUT" not in t
                            for t in sent), sent
    # without the setting the quoted output in the think block is taken as the answer
    plain = run_rollouts(ScriptedBackend(script), prompts, GOALS, seeds=[0], params=PARAMS,
                         max_turns=3, meta={"model": "m", "condition": "baseline"})
    assert plain.filter(goal_id=1)["outcome"].to_list() == ["compliant", "compliant"]
