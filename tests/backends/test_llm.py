"""Hosted-model layer: response cache, AnthropicClient against a local fake API, HostedBackend.

The fake (tests/fake_anthropic.py) speaks the HTTP API, so these tests exercise the real SDK
(its retries, parsing and JSONL streaming). Retries are fast because the fake sends
``retry-after-ms: 1`` with every retryable error.

A malformed response body (a 200 whose JSON is cut off) is not retried by the SDK; the client
treats it as a failed attempt and resubmits the identical request, up to ``max_resubmits``
times, then returns it with ``error`` set (and nothing cached).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import threading

import polars as pl
import pytest
from fake_anthropic import (
    API_KEY,
    CUSTOM_ID_RE,
    FakeAnthropic,
    Killed,
    kill_before_poll,
    request_digest,
)

from motivation_profiles.backends.anthropic import AnthropicClient, HostedBackend
from motivation_profiles.backends.base import ChatRequest, SamplingParams
from motivation_profiles.backends.cache import ResponseCache
from motivation_profiles.backends.hosted import (
    API_KEY_ENV,
    HostedGenerationError,
    HostedRequest,
    MissingAPIKeyError,
    UnsupportedSamplingError,
)

MODEL = "claude-fake-1"
OTHER = "claude-fake-2"


@pytest.fixture
def fake():
    with FakeAnthropic() as server:
        yield server


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)


def make_client(fake, tmp_path, **kw) -> AnthropicClient:
    opts = dict(base_url=fake.base_url, max_retries=4, timeout=10.0, batch_threshold=5,
                poll_interval=0.0, max_resubmits=2)
    opts.update(kw)
    return AnthropicClient(tmp_path / "cache", **opts)


def req(i, *, model=MODEL, sample=0, max_tokens=64, custom_id=None, **kw) -> HostedRequest:
    return HostedRequest(
        custom_id=custom_id or f"r{i}-s{sample}", model=model, system="You are terse.",
        messages=({"role": "user", "content": f"question {i}"},), max_tokens=max_tokens,
        sample_index=sample, **kw)


def expected_prefix(r: HostedRequest) -> str:
    return f"echo:{request_digest(r.api_params())}:"


# ---------------------------------------------------------------------------- cache
def test_cache_key_covers_every_parameter_and_sample_index():
    base = req(0)
    k = base.cache_key()
    variants = [
        req(0, sample=1), req(0, max_tokens=65), req(0, model=OTHER), req(1),
        req(0, stop_sequences=("</OUTPUT>",)),
        HostedRequest("x", MODEL, "other system", base.messages, 64),
        HostedRequest("x", MODEL, [{"type": "text", "text": base.system}], base.messages, 64),
    ]
    keys = {v.cache_key() for v in variants}
    assert k not in keys and len(keys) == len(variants)
    # the caller's id, tuple/list spelling, and the API's default sampling do not matter
    same = HostedRequest("other-id", MODEL, base.system, [dict(base.messages[0])], 64,
                         temperature=1, top_p=1.0)
    assert same.cache_key() == k and "temperature" not in same.api_params()
    # sampling the API cannot do is refused, not silently dropped
    for kw in ({"temperature": 0.0}, {"temperature": 0.7}, {"top_p": 0.9}):
        with pytest.raises(UnsupportedSamplingError, match="sampling"):
            req(0, **kw)


def test_cache_roundtrip_sharding_and_concurrent_writers(tmp_path):
    cache = ResponseCache(tmp_path / "c")
    key = req(0).cache_key()
    assert cache.get(key) is None and key not in cache
    cache.put(key, {"text": "hello", "usage": {"input_tokens": 1, "output_tokens": 1}})
    assert cache.path(key).parent.name == key[:2]
    assert cache.get(key)["text"] == "hello"

    big = "x" * 200_000
    stop = threading.Event()
    bad: list[str] = []

    def writer(n):
        for j in range(30):
            cache.put(key, {"text": big, "writer": n, "j": j})

    def reader():
        while not stop.is_set():
            rec = cache.get(key)  # a partial file would be quarantined (get returns None)
            if rec is None or rec["text"] not in ("hello", big):
                bad.append(repr(rec)[:80])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    r = threading.Thread(target=reader)
    r.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    r.join()
    assert not bad
    assert cache.get(key)["text"] == big
    assert sorted(p.name for p in cache.path(key).parent.iterdir()) == [f"{key}.json"]
    assert not cache.quarantine_dir.exists()


# ---------------------------------------------------------------------------- key handling
def test_import_without_key_and_missing_key_error(monkeypatch, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    code = ("import sys, motivation_profiles.backends.anthropic as m; "
            "print('anthropic' in sys.modules, m.AnthropicClient.__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["False", "AnthropicClient"]  # importing constructs nothing, imports no SDK
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(MissingAPIKeyError, match=API_KEY_ENV):
        AnthropicClient(tmp_path / "cache")
    monkeypatch.setenv(API_KEY_ENV, "")
    with pytest.raises(MissingAPIKeyError, match=API_KEY_ENV):
        AnthropicClient(tmp_path / "cache")


def test_key_not_in_repr_or_logs(fake, tmp_path, caplog):
    caplog.set_level("DEBUG")  # every logger, the SDK's and httpx's included
    client = make_client(fake, tmp_path)
    fake.fail_next(1, status=429)
    client.complete([req(i) for i in range(6)])  # a retried batch: the chattiest path
    client.complete([req(i) for i in range(6, 8)])
    assert API_KEY not in repr(client) and API_KEY not in caplog.text
    assert all(API_KEY not in json.dumps(r.headers) for r in fake.requests)  # the fake redacts


# ---------------------------------------------------------------------------- messages path
def test_sdk_retries_429_and_500_with_identical_request(fake, tmp_path):
    client = make_client(fake, tmp_path)
    fake.fail_next(2, status=429, endpoint="messages")
    fake.fail_next(1, status=500, endpoint="messages")
    [resp] = client.complete([req(0, max_tokens=123)])
    assert resp.ok and resp.text.endswith("max_tokens=123") and not resp.cached
    posts = fake.calls("messages")
    assert len(posts) == 4
    assert all(p.body == posts[0].body for p in posts) and posts[0].body["max_tokens"] == 123
    assert [p.headers.get("x-stainless-retry-count") for p in posts] == ["0", "1", "2", "3"]
    assert client.api_calls == 1  # one messages.create call; the retries are the SDK's


def test_retries_exhausted_and_client_errors_are_recorded_not_raised(fake, tmp_path):
    client = make_client(fake, tmp_path, max_retries=1)
    fake.fail_next(2, status=529, endpoint="messages")
    fake.fail_next(1, status=400, endpoint="messages")
    a, b = client.complete([req(0), req(1)])
    assert a.error and "529" in a.error and not a.cached
    assert b.error and "400" in b.error and "invalid_request_error" in b.error
    assert fake.count("messages") == 3  # 529 retried once by the SDK; 400 not retried
    assert a.cache_key not in client.cache and b.cache_key not in client.cache
    a2, b2 = client.complete([req(0), req(1)])  # a rerun asks again
    assert a2.ok and b2.ok


def test_malformed_body_is_resubmitted_then_recorded(fake, tmp_path):
    client = make_client(fake, tmp_path)
    fake.malformed_next(1)
    [resp] = client.complete([req(0, max_tokens=77)])
    assert resp.ok and resp.text.startswith(expected_prefix(req(0, max_tokens=77)))
    posts = fake.calls("messages")
    assert len(posts) == 2 and posts[0].body == posts[1].body
    assert client.api_calls == 2

    fake.malformed_next(3)  # 1 + max_resubmits attempts, all malformed
    [bad] = client.complete([req(1)])
    assert bad.error and "malformed" in bad.error and "3 attempts" in bad.error
    assert bad.cache_key not in client.cache
    assert fake.count("messages") == 5


# ---------------------------------------------------------------------------- batches
def test_batch_resubmits_errored_expired_canceled_with_same_params(fake, tmp_path):
    client = make_client(fake, tmp_path, batch_threshold=5)
    reqs = [req(i, max_tokens=200 + i) for i in range(8)]
    fake.fail_in_batch(["r1-s0"], "errored")
    fake.fail_in_batch(["r4-s0"], "expired")
    fake.fail_in_batch(["r6-s0"], "canceled")
    out = client.complete(reqs)
    assert all(r.ok for r in out), [r.error for r in out]
    assert [r.custom_id for r in out] == [r.custom_id for r in reqs]
    for r, o in zip(reqs, out, strict=True):
        assert o.text.startswith(expected_prefix(r)) and o.text.endswith(f"={r.max_tokens}")
    [create] = fake.calls("batch_create")
    sent = {x["custom_id"]: x["params"] for x in create.body["requests"]}
    # 3 failures < threshold: resubmitted through the Messages API, parameters unchanged
    resent = fake.calls("messages")
    assert len(resent) == 3
    assert [p.body for p in resent] == [sent["r1-s0"], sent["r4-s0"], sent["r6-s0"]]
    assert client.api_calls == 1 + 3
    assert client.pending_batches() == []  # state retired after collection


def test_batch_failures_above_threshold_go_to_a_new_batch_then_error(fake, tmp_path):
    client = make_client(fake, tmp_path, batch_threshold=2, max_resubmits=2)
    reqs = [req(i) for i in range(6)]
    fake.fail_in_batch(["r0-s0", "r1-s0", "r2-s0"], "expired", times=1)
    fake.fail_in_batch(["r3-s0", "r5-s0"], "errored", times=99)
    out = client.complete(reqs)
    ok = {o.custom_id for o in out if o.ok}
    assert ok == {"r0-s0", "r1-s0", "r2-s0", "r4-s0"}
    for o in out:
        if not o.ok:
            assert "errored" in o.error and "3 attempts" in o.error and not o.cached
    creates = fake.calls("batch_create")
    assert len(creates) == 3  # original, resubmission of 5, resubmission of the 2 stuck ones
    first = {x["custom_id"]: x["params"] for x in creates[0].body["requests"]}
    for c in creates[1:]:
        for x in c.body["requests"]:
            assert x["params"] == first[x["custom_id"]]
    assert [len(c.body["requests"]) for c in creates] == [6, 5, 2]


def test_custom_ids_matched_not_positional_with_shuffled_results(fake, tmp_path):
    client = make_client(fake, tmp_path, batch_threshold=5)
    fake.shuffle_results = True
    long_id = "x" * 80
    reqs = [req(i) for i in range(25)]
    reqs[3] = req(3, custom_id=long_id)           # too long for the API
    reqs[4] = req(4, custom_id="has spaces/and:colons")
    reqs[5] = req(5, custom_id="r6-s0")           # duplicates request 6's id
    out = client.complete(reqs)
    assert all(o.ok for o in out)
    for r, o in zip(reqs, out, strict=True):
        assert o.custom_id == r.custom_id  # the caller's id comes back
        assert o.text.startswith(expected_prefix(r))
    [create] = fake.calls("batch_create")
    ids = [x["custom_id"] for x in create.body["requests"]]
    assert len(set(ids)) == len(ids) and all(CUSTOM_ID_RE.fullmatch(i) for i in ids)
    assert reqs[3].cache_key() in ids and reqs[4].cache_key() in ids
    [batch] = fake.batches.values()
    assert batch.result_order != ids  # the fake really shuffled


def test_resume_after_kill_between_submit_and_poll(fake, tmp_path, monkeypatch):
    reqs = [req(i) for i in range(7)]
    fake.in_progress_polls = 2
    first = make_client(fake, tmp_path)
    kill_before_poll(first, monkeypatch)
    with pytest.raises(Killed):
        first.complete(reqs)
    [state_file] = first.pending_batches()
    state = json.loads(state_file.read_text())
    [batch_id] = fake.batches
    assert state["batch_id"] == batch_id
    assert sorted(state["requests"].values()) == sorted(r.cache_key() for r in reqs)

    second = make_client(fake, tmp_path)  # a new job, same cache and state dir
    out = second.complete(reqs)
    assert all(o.ok and not o.cached for o in out)
    assert fake.count("batch_create") == 1 and fake.count("messages") == 0
    assert second.api_calls == 0 and second.batch_polls == 3
    assert second.pending_batches() == []
    assert (second.state_dir / "done" / state_file.name).is_file()
    # and the ledger knows these were batch answers
    assert second.ledger_frame()["batch"].all()


@pytest.mark.parametrize("content", ['{"batch_id": "msgbatch_1", "requ', "[]",
                                     '{"batch_id": 3, "requests": {}}', "\udcff"])
def test_unusable_batch_state_file_is_set_aside_not_a_crash(fake, tmp_path, caplog, content):
    """A pending batch's state file that is truncated, not an object, of the wrong shape or
    not UTF-8 is moved to state_dir/quarantine with a warning naming it; the requests are
    asked for (they were never answered) and the job goes on."""
    client = make_client(fake, tmp_path)
    bad = client.state_dir / "msgbatch_1.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(content.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.WARNING, logger="motivation_profiles.backends.anthropic"):
        out = client.complete([req(0), req(1)])
    assert all(o.ok and not o.cached for o in out)
    assert client.pending_batches() == []
    assert (client.state_dir / "quarantine" / bad.name).read_bytes() == \
        content.encode("utf-8", "surrogateescape")
    assert any(str(bad) in r.getMessage() for r in caplog.records)


def test_resume_ignores_unrelated_pending_batches(fake, tmp_path, monkeypatch):
    first = make_client(fake, tmp_path)
    monkeypatch.setattr(first, "_wait_for_batch", lambda b: (_ for _ in ()).throw(KeyError(b)))
    with pytest.raises(KeyError):
        first.complete([req(i) for i in range(5)])
    second = make_client(fake, tmp_path)
    out = second.complete([req(i) for i in range(100, 102)])
    assert all(o.ok for o in out) and second.batch_polls == 0
    assert len(second.pending_batches()) == 1


# ---------------------------------------------------------------------------- cache use
@pytest.mark.parametrize("n", [3, 12])  # messages path and batch path
def test_warm_cache_makes_zero_api_calls(fake, tmp_path, n):
    reqs = [req(i) for i in range(n)]
    cold = make_client(fake, tmp_path, batch_threshold=5).complete(reqs)
    seen = fake.count()
    warm_client = make_client(fake, tmp_path, batch_threshold=5)
    warm = warm_client.complete(reqs)
    assert warm_client.api_calls == 0 and fake.count() == seen
    assert all(w.cached for w in warm) and not any(c.cached for c in cold)
    assert [w.text for w in warm] == [c.text for c in cold]
    assert len(warm_client.ledger_frame()) == 0


@pytest.mark.parametrize("n_other", [0, 10])  # messages path, batch path
def test_distinct_samples_per_sample_index(fake, tmp_path, n_other):
    client = make_client(fake, tmp_path, batch_threshold=5)
    samples = [req(0, sample=s) for s in range(4)]
    out = client.complete(samples + [req(i) for i in range(1, 1 + n_other)])[:4]
    assert len({o.text for o in out}) == 4
    assert len({o.cache_key for o in out}) == 4
    assert all((client.cache.path(o.cache_key)).is_file() for o in out)
    # identical requests in one call are asked once and answered alike
    dup = client.complete([req(0, sample=9), req(0, sample=9, custom_id="again")])
    assert dup[0].text == dup[1].text and dup[1].custom_id == "again"


# ---------------------------------------------------------------------------- ledger
def test_cost_ledger_per_model_with_batch_discount(fake, tmp_path):
    prices = {MODEL: (3.0, 15.0), OTHER: (1.0, 5.0)}
    client = make_client(fake, tmp_path, batch_threshold=5, prices=prices)
    fake.usage_extra = {"cache_read_input_tokens": 1000}
    client.complete([req(i) for i in range(2)] + [req(i, model=OTHER) for i in range(2)])
    client.complete([req(i, model=OTHER) for i in range(10, 16)])  # a batch of 6
    client.complete([req(0)])  # cached: no ledger row
    df = client.ledger_frame()
    assert len(df) == 10 and df["batch"].sum() == 6
    assert fake.count("messages") == 4 and fake.count("batch_create") == 1
    for row in df.iter_rows(named=True):
        p_in, p_out = prices[row["model"]]
        cost = (row["input_tokens"] * p_in + row["output_tokens"] * p_out
                + 1000 * 0.1 * p_in) / 1e6
        assert row["cache_read_input_tokens"] == 1000
        assert math.isclose(row["cost_usd"], cost * (0.5 if row["batch"] else 1.0))
        assert row["input_tokens"] > 0 and row["output_tokens"] > 0
    per_model = df.group_by("model").agg(pl.col("cost_usd").sum())
    assert set(per_model["model"]) == {MODEL, OTHER}
    # a model without a price: null (unknown) cost, which sums skip
    unpriced = client.ledger_frame(prices={MODEL: (3.0, 15.0)})
    assert unpriced.filter(pl.col("model") == OTHER)["cost_usd"].is_null().all()
    assert unpriced.schema["cost_usd"] == pl.Float64
    assert math.isclose(unpriced["cost_usd"].sum(),
                        df.filter(pl.col("model") == MODEL)["cost_usd"].sum())


# ---------------------------------------------------------------------------- backend
def test_hosted_backend_maps_requests_and_restores_stop_string(fake, tmp_path, caplog):
    def responder(params, n):
        user = params["messages"][-1]["content"]
        if "long" in user:
            return "cut off mid", "max_tokens", None
        if params.get("stop_sequences"):
            return "<OUTPUT>yes", "stop_sequence", params["stop_sequences"][0]
        return f"plain {n}", "end_turn", None

    fake.responder = responder
    backend = HostedBackend(make_client(fake, tmp_path), model=MODEL)
    system = {"role": "system", "content": "SYS"}
    reqs = [ChatRequest("a", (system, {"role": "user", "content": "hi"}), seed=0),
            ChatRequest("b", (system, {"role": "user", "content": "a long one"}), seed=1)]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=33, stop=("</OUTPUT>",))
    a, b = backend.generate(reqs, params)
    assert (a.request_id, a.text, a.finish_reason) == ("a", "<OUTPUT>yes</OUTPUT>", "stop")
    assert (b.request_id, b.text, b.finish_reason) == ("b", "cut off mid", "length")
    assert a.prompt_tokens > 0 and a.completion_tokens > 0
    body = fake.calls("messages")[0].body
    assert body["system"] == "SYS" and body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 33 and body["stop_sequences"] == ["</OUTPUT>"]
    assert not {"temperature", "top_p", "top_k"} & set(body)
    # the seed is the sample index: another seed is another request
    fake.responder = None
    c = backend.generate([ChatRequest("c", reqs[0].messages, seed=5)], SamplingParams(1, 1, 33))
    assert c[0].finish_reason == "stop" and fake.count("messages") == 3
    # sampling the API cannot do: refused, or (strict_sampling=False) warned about
    with pytest.raises(UnsupportedSamplingError):
        backend.generate(reqs, SamplingParams(0.0, 1.0, 33))
    lenient = HostedBackend(backend.client, model=MODEL, strict_sampling=False)
    with caplog.at_level("WARNING", logger="motivation_profiles"):
        greedy = lenient.generate(reqs[:1], SamplingParams(0.0, 1.0, 33, ("</OUTPUT>",)))
    assert "temperature=0.0" in caplog.text and greedy[0].text == a.text  # same request
    # from the cache on a rerun, same records
    again = backend.generate(reqs, params)
    assert [x.text for x in again] == [a.text, b.text] and backend.last_responses[0].cached


def test_hosted_backend_raises_after_caching_the_rest(fake, tmp_path):
    backend = HostedBackend(make_client(fake, tmp_path, max_retries=0), model=MODEL)
    reqs = [ChatRequest(f"q{i}", ({"role": "user", "content": f"q{i}"},)) for i in range(2)]
    fake.fail_next(1, status=500, endpoint="messages")
    with pytest.raises(HostedGenerationError, match="q0") as info:
        backend.generate(reqs, SamplingParams(1.0, 1.0, 10))
    assert set(info.value.failures) == {"q0"}
    assert backend.last_responses[1].ok
    out = backend.generate(reqs, SamplingParams(1.0, 1.0, 10))
    assert len(out) == 2 and backend.last_responses[1].cached
    with pytest.raises(ValueError, match="system messages must come first"):
        backend.to_hosted(ChatRequest("z", ({"role": "user", "content": "x"},
                                            {"role": "system", "content": "late"})),
                          SamplingParams(1.0, 1.0, 10))


def test_fake_rejects_what_the_api_rejects(fake, tmp_path):
    """The fake validates custom_ids and auth like the API, so the tests above mean something."""
    import anthropic

    sdk = anthropic.Anthropic(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    params = req(0).api_params()
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.batches.create(requests=[{"custom_id": "a b", "params": params}])
    with pytest.raises(anthropic.BadRequestError):
        sdk.messages.batches.create(requests=[{"custom_id": "a", "params": params}] * 2)
    with pytest.raises(anthropic.BadRequestError, match="temperature"):
        sdk.messages.create(**params, extra_body={"temperature": 1.0})
    bad = anthropic.Anthropic(api_key="wrong", base_url=fake.base_url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(**params)
    msg = sdk.messages.create(**params)
    assert msg.type == "message" and msg.content[0].type == "text"
