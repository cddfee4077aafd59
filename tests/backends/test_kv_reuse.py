"""Per-row KV reuse (motivation_profiles.backends.kv_reuse) and the hf backend's use of it: a
row's next turn, its forced-choice tag scoring and a judge's second direction reuse the keys
and values computed before, and give what full prefill gives."""

from __future__ import annotations

import polars as pl
import torch

from motivation_profiles.backends.base import ChatRequest, SamplingParams
from motivation_profiles.backends.hf import HFBackend
from motivation_profiles.backends.kv_reuse import KVStore
from motivation_profiles.rollouts.protocol import PromptSet
from motivation_profiles.rollouts.run import run_rollouts

SYSTEM = "You are a test assistant who answers briefly. " * 6


def _layers(n, fill=0.0):
    """One layer of keys and values for ``n`` tokens: 64 bytes a token."""
    return [(torch.full((2, n, 4), fill), torch.full((2, n, 4), fill))]


# ---------------------------------------------------------------------------- the store
def test_store_matches_the_longest_shared_run_and_leaves_one_token():
    store = KVStore(max_bytes=100 * 64)
    store.put("a", [1, 2, 3, 4], _layers(4))
    store.put("a", [1, 2, 9], _layers(3))
    assert store.match("a", [1, 2, 3, 4, 5])[0] == 4
    assert store.match("a", [1, 2, 3, 7])[0] == 3
    assert store.match("a", [1, 2, 9, 9])[0] == 3
    # the whole prompt stored: its last token is computed again (its logits are needed)
    assert store.match("a", [1, 2, 3, 4])[0] == 3
    assert store.match("a", [5, 6]) == (0, None)
    # runs computed under another steering are never reused
    assert store.match("b", [1, 2, 3, 4, 5]) == (0, None)


def test_store_keeps_one_copy_and_drops_least_recently_used_runs():
    store = KVStore(max_bytes=10 * 64)
    store.put(None, [1, 2, 3], _layers(3))
    store.put(None, [1, 2, 3, 4, 5], _layers(5))      # extends the first: replaces it
    assert (len(store), store.tokens) == (1, 5)
    store.put(None, [1, 2], _layers(2))               # inside a stored run: not kept twice
    assert (len(store), store.tokens) == (1, 5)
    store.put(None, [7, 8, 9], _layers(3))
    store.match(None, [1, 2, 3, 4, 5, 6])              # the first run is used: now the newest
    store.put(None, [6, 6, 6], _layers(3))             # 11 tokens: the oldest run goes
    assert store.match(None, [7, 8, 9, 1])[0] == 0
    assert store.match(None, [1, 2, 3, 4, 5, 6])[0] == 5
    assert store.nbytes <= 10 * 64
    store.put(None, list(range(11)), _layers(11))      # larger than the store: not kept
    assert store.match(None, list(range(12)))[0] == 0
    store.put(None, list(range(11)), _layers(11), force=True)   # a call's shared prefix
    assert store.match(None, list(range(12)))[0] == 11 and len(store) == 1


# ---------------------------------------------------------------------- the hf backend
def _backend(tiny_model, **kw):
    model, tok = tiny_model
    return HFBackend(model=model, tokenizer=tok, show_progress=False, **kw)


def _turns(backend, params):
    """Two turns of four conversations, the second continuing each first answer."""
    first = [ChatRequest(f"r{i}", ({"role": "system", "content": SYSTEM},
                                   {"role": "user", "content": f"Question {i}: " + "why? " * i}),
                         seed=i) for i in range(4)]
    a = backend.generate(first, params)
    second = [ChatRequest(f"{r.request_id}-2", (*r.messages,
                                                {"role": "assistant", "content": c.text},
                                                {"role": "user", "content": "<NEXT/>"}),
                          seed=r.seed) for r, c in zip(first, a, strict=True)]
    return [c.text for c in a], [c.text for c in backend.generate(second, params)]


def test_next_turn_reuses_the_transcript_and_matches_full_prefill(tiny_model):
    # sampled (the random model's greedy text is one repeated token, blind to its logits)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=10)
    reuse = _backend(tiny_model, batch_size=3)
    full = _backend(tiny_model, batch_size=3, reuse_prefix=False)
    assert _turns(reuse, params) == _turns(full, params)
    # the second turn computed only what is new: far fewer tokens than full prefill
    assert full.kv_stats["reused"] == 0
    assert reuse.kv_stats["reused"] > 2 * reuse.kv_stats["computed"]


def _score_requests(n=5):
    return [ChatRequest(f"s{i}", ({"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": f"Rate item {i}" + " please" * i},
                                  {"role": "assistant", "content": "<score>"}), seed=0)
            for i in range(n)]


# candidates of unequal token lengths, one a prefix of another
CANDIDATES = ["1</score>", "4</score> and more text", "10", "1"]


def test_packed_candidates_equal_repeated_cache_and_full_prefill(tiny_model):
    reqs = _score_requests()
    packed = _backend(tiny_model, batch_size=2).continuation_logprobs(reqs, CANDIDATES)
    plain = _backend(tiny_model, batch_size=2)
    plain._tails_packed = plain._tails_repeated
    repeated = plain.continuation_logprobs(reqs, CANDIDATES)
    full = _backend(tiny_model, batch_size=1, reuse_prefix=False).continuation_logprobs(
        reqs, CANDIDATES)
    np_packed = torch.tensor(packed)
    torch.testing.assert_close(np_packed, torch.tensor(repeated), rtol=0, atol=1e-4)
    torch.testing.assert_close(np_packed, torch.tensor(full), rtol=0, atol=1e-4)
    # each candidate scored as its own sequence: a candidate and its extension differ
    assert all(row[2] < row[3] for row in packed)   # "10" = "1" then "0"


def _generate_then_score(backend):
    """Each row generates, then candidates are scored right after what it wrote (as the
    forced-choice tag is): (log-probs, prompt tokens computed, reused) of the scoring call."""
    reqs = _score_requests(3)
    gen = backend.generate(reqs, SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=6))
    before = dict(backend.kv_stats)
    follow = [ChatRequest(f"{r.request_id}-c", (*r.messages[:-1], {
        "role": "assistant", "content": r.messages[-1]["content"] + c.text + " Answer: "}),
        seed=0) for r, c in zip(reqs, gen, strict=True)]
    got = backend.continuation_logprobs(follow, CANDIDATES)
    return (torch.tensor(got), backend.kv_stats["computed"] - before["computed"],
            backend.kv_stats["reused"] - before["reused"])


def test_scoring_after_generation_reuses_the_rows(tiny_model):
    got, computed, reused = _generate_then_score(_backend(tiny_model))
    assert reused > 5 * computed
    want, _, none = _generate_then_score(_backend(tiny_model, reuse_prefix=False))
    assert none == 0
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_a_wrong_reuse_is_caught(tiny_model, monkeypatch):
    """The comparisons here have teeth: generated tokens' keys and values kept one position
    off change the scores of what follows them."""
    want, _, _ = _generate_then_score(_backend(tiny_model, reuse_prefix=False))
    keep = HFBackend._keep

    def shifted(self, cache, row, positions, tokens):
        return keep(self, cache, row, [max(0, p - 1) for p in positions], tokens)

    monkeypatch.setattr(HFBackend, "_keep", shifted)
    got, _, _ = _generate_then_score(_backend(tiny_model))
    assert (got - want).abs().max() > 1e-3


def test_forced_choice_rollouts_are_the_same_with_and_without_reuse(tiny_model, repo):
    """The whole forced-choice protocol (turns, continuation, tag scoring and draw) on the tiny
    model: the same rows with reuse as with full prefill."""
    prompts = PromptSet.from_config({
        "system": str(repo / "resources/prompts/helpful_only_compact.txt"),
        "user_template": str(repo / "resources/prompts/user_turn.txt"),
        "tier_values": {"monitored": "True", "unmonitored": "False"},
        "continuation": "<NEXT/>"})
    goals = pl.DataFrame({"goal_id": [0, 1, 2], "goal": ["Write a poem", "Explain tides",
                                                         "List three rivers"]})
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=8,
                            stop=("</OUTPUT>",))
    frames = []
    for reuse in (True, False):
        frames.append(run_rollouts(
            _backend(tiny_model, reuse_prefix=reuse), prompts, goals, seeds=[0], params=params,
            max_turns=3, meta={"model": "tiny"}, prefill="<SCRATCHPAD_REASONING>",
            output_mode="forced_choice", output_tokens=4, batch_tiers=True))
    a, b = frames
    assert a["transcript"].to_list() == b["transcript"].to_list()
    assert a["outcome"].to_list() == b["outcome"].to_list()
    assert max(abs(x - y) for x, y in zip(a["p_accept"], b["p_accept"], strict=True)) < 1e-4


# ------------------------------------------------------------------ shared prefixes on disk
def test_shared_prefix_is_read_back_by_a_later_job(tiny_model, tmp_path, caplog):
    """A second backend (a later job) reads the shared system prompt's keys and values from
    ``prefix_dir`` instead of computing them, and generates what the first did; another
    weights identity or steering does not read it; a damaged file is computed again."""
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=6)
    reqs = _score_requests(3)

    def job(weights="w1", **kw):
        b = _backend(tiny_model, prefix_dir=str(tmp_path), weights_id=weights, **kw)
        return b, [c.text for c in b.generate(reqs, params)]

    first, texts = job()
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1 and first.kv_stats["loaded"] == 0
    second, again = job()
    assert again == texts and second.kv_stats["loaded"] > 16
    assert second.kv_stats["computed"] < first.kv_stats["computed"]
    other, _ = job(weights="w2")                      # other weights: its own file
    assert other.kv_stats["loaded"] == 0 and len(list(tmp_path.glob("*.safetensors"))) == 2
    files[0].write_bytes(b"not a safetensors file")
    damaged, after = job()
    assert damaged.kv_stats["loaded"] == 0 and after == texts
    assert "unusable" in caplog.text
    assert job()[0].kv_stats["loaded"] > 16             # rewritten whole


def test_factory_passes_a_models_reuse_settings(tiny_model_dir, tmp_path):
    from conftest import TINY_SPEC

    from motivation_profiles.backends.factory import local_backend
    from motivation_profiles.core.hashing import sha256_path

    spec = {**TINY_SPEC, "kv_reuse_gib": 0.5, "prefix_cache": str(tmp_path / "kv")}
    b = local_backend(spec, str(tiny_model_dir))
    assert b.kv_reuse_bytes == 2**29 and b._store.max_bytes == 2**29
    assert b.prefix_dir == str(tmp_path / "kv") and b.weights_id == sha256_path(tiny_model_dir)
    plain = local_backend(dict(TINY_SPEC), str(tiny_model_dir))   # the defaults: 2 GiB, no disk
    assert plain.kv_reuse_bytes == 2 * 2**30 and plain.prefix_dir is None
