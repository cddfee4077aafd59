"""A response cache that cannot poison a run (backends/cache.py, `motivation-profiles cache`).

Each kind of damaged record (bytes that are not UTF-8, truncated JSON, a JSON list, a missing
field, a sound record under another key's name, edited content, the earlier format) is a miss:
a warning names the file and the reason, the file is moved to ``<cache>/quarantine/``, the
request is computed again through the real cache path (``CachedBackend`` / ``AnthropicClient``),
and the answer equals a clean computation's. ``cache verify`` finds and quarantines the same.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_anthropic import API_KEY, FakeAnthropic

from motivation_profiles.backends.anthropic import AnthropicClient
from motivation_profiles.backends.base import ChatRequest, Completion, SamplingParams
from motivation_profiles.backends.cache import (
    CachedBackend,
    Problem,
    ResponseCache,
    decode_record,
    encode_record,
)
from motivation_profiles.backends.hosted import API_KEY_ENV, HostedRequest
from motivation_profiles.cli import main as cli

PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=12)
LOGGER = "motivation_profiles.backends.cache"


class Echo:
    """A deterministic local backend that records what it was asked."""

    name = "echo"

    def __init__(self):
        self.asked: list[str] = []

    def generate(self, requests, params):
        self.asked += [r.request_id for r in requests]
        return [Completion(r.request_id, f"{r.messages[-1]['content']}#{r.seed}", "stop", 5,
                           2 + r.seed) for r in requests]


def requests(n: int = 4) -> list[ChatRequest]:
    return [ChatRequest(f"r{i}", ({"role": "user", "content": f"question {i}"},), seed=i % 2)
            for i in range(n)]


def envelope(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# Each corruption: (what it does to the record at `path`, given another sound record `other`;
# the reason it must be quarantined under).
def _random_bytes(path: Path, other: Path) -> None:
    path.write_bytes(bytes(range(255, -1, -1)) * 3)  # 0xff...: not UTF-8


def _truncated(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[:37])


def _json_list(path: Path, other: Path) -> None:
    path.write_text("[]")


def _missing_field(path: Path, other: Path) -> None:
    body = envelope(path)
    del body["sha256"]
    path.write_text(json.dumps(body))


def _missing_record_field(path: Path, other: Path) -> None:
    """Checksummed correctly, but the record lacks a field its provider's records have."""
    body = envelope(path)
    del body["record"]["finish_reason"]
    path.write_text(encode_record(body["key"], body["record"]))


def _other_key(path: Path, other: Path) -> None:
    path.write_bytes(other.read_bytes())


def _edited(path: Path, other: Path) -> None:
    body = envelope(path)
    body["record"]["text"] = "4.0"  # the probe's edited judge score
    path.write_text(json.dumps(body))


def _lone_surrogate(path: Path, other: Path) -> None:
    body = envelope(path)
    body["record"]["text"] = "\udcff"  # valid JSON ("\\udcff"), but not encodable text
    path.write_text(json.dumps(body))


def _legacy(path: Path, other: Path) -> None:
    path.write_text(json.dumps(envelope(path)["record"]))  # the record alone: no key/checksum


CORRUPTIONS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "random-bytes": (_random_bytes, "undecodable"),
    "truncated": (_truncated, "undecodable"),
    "json-list": (_json_list, "wrong-shape"),
    "missing-field": (_missing_field, "wrong-shape"),
    "missing-record-field": (_missing_record_field, "wrong-shape"),
    "other-key": (_other_key, "wrong-key"),
    "edited": (_edited, "checksum"),
    "lone-surrogate": (_lone_surrogate, "checksum"),
    "legacy": (_legacy, "legacy"),
}


# ------------------------------------------------------------------------- local cache path
@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_record_is_quarantined_and_recomputed(tmp_path, kind, caplog):
    corrupt, reason = CORRUPTIONS[kind]
    cache = ResponseCache(tmp_path / "c")
    reqs = requests()
    clean = CachedBackend(Echo(), cache, model_id="m@1").generate(reqs, PARAMS)
    backend = CachedBackend(Echo(), cache, model_id="m@1")
    key, other = (backend.key(r, PARAMS) for r in reqs[1:3])
    path = cache.path(key)
    corrupt(path, cache.path(other))
    damaged = path.read_bytes()

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = backend.generate(reqs, PARAMS)
    assert again == clean
    assert backend.inner.asked == ["r1"] and (backend.calls, backend.hits) == (1, 3)
    moved = cache.quarantine_dir / f"{key}.json.{reason}"
    assert moved.read_bytes() == damaged  # kept for inspection
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning and reason in warning and str(moved) in warning
    # the recomputed record is sound, and a rerun is all hits
    assert decode_record(path.read_bytes(), key)[1] is None
    third = CachedBackend(Echo(), cache, model_id="m@1")
    assert third.generate(reqs, PARAMS) == clean and third.inner.asked == []


def test_every_kind_at_once_with_the_tiny_model_sampling(tiny_model, tmp_path):
    """The hf backend at temperature 1: after every record but one is damaged (one kind
    each), the rerun regenerates those alone, in another batching, and gets the clean run's
    completions (per-request random streams)."""
    from motivation_profiles.backends.hf import HFBackend

    model, tok = tiny_model

    def backend(cache: Path) -> CachedBackend:
        inner = HFBackend(model=model, tokenizer=tok, show_progress=False, batch_size=3)
        return CachedBackend(inner, ResponseCache(cache), model_id="tiny@1")

    reqs = [ChatRequest(f"q{i}", ({"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": f"tell me about thing {i}"}),
                        seed=i % 3) for i in range(len(CORRUPTIONS) + 1)]
    clean = backend(tmp_path / "clean").generate(reqs, PARAMS)
    first = backend(tmp_path / "c")
    assert first.generate(reqs, PARAMS) == clean
    keys = [first.key(r, PARAMS) for r in reqs]
    for (corrupt, _), key in zip(CORRUPTIONS.values(), keys[1:], strict=True):
        corrupt(first.cache.path(key), first.cache.path(keys[0]))
    rerun = backend(tmp_path / "c")
    assert rerun.generate(reqs, PARAMS) == clean
    assert (rerun.calls, rerun.hits) == (len(CORRUPTIONS), 1)
    assert sorted(p.name.split(".")[-1] for p in rerun.cache.quarantine_dir.iterdir()) == \
        sorted(reason for _, reason in CORRUPTIONS.values())


def test_a_record_rewritten_meanwhile_is_not_quarantined(tmp_path):
    """Two jobs: one judged the bytes it read unusable while another rewrote the record; the
    sound new file is left in place."""
    cache = ResponseCache(tmp_path / "c")
    key = "ab" * 32
    path = cache.path(key)
    path.parent.mkdir(parents=True)
    path.write_text("[]")
    seen = path.stat()
    cache.put(key, {"text": "fresh"})  # the other job's atomic rewrite
    assert cache.quarantine(path, Problem("wrong-shape", "x"), seen) is None
    assert cache.get(key) == {"text": "fresh"}
    assert not cache.quarantine_dir.exists()
    # the same file, unchanged since judged, is moved; a second one of the key gets a suffix
    seen = path.stat()
    first = cache.quarantine(path, Problem("checksum", "x"), seen)
    path.write_text("[]")
    second = cache.quarantine(path, Problem("checksum", "x"), path.stat())
    assert (first.name, second.name) == (f"{key}.json.checksum", f"{key}.json.checksum.1")


def test_unreadable_record_is_an_error_naming_it(tmp_path, monkeypatch):
    """A record this user may not read (a teammate's 0600 file) is not a miss: recomputing it
    would pay again and fail to store. The error names the file and the fix."""
    import motivation_profiles.backends.cache as cache_mod

    cache = ResponseCache(tmp_path / "c")
    key = "cd" * 32
    cache.put(key, {"text": "private"})

    def denied(path, mode="r", *a, **kw):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache_mod, "open", denied, raising=False)
    with pytest.raises(PermissionError, match=rf"{key}\.json.*chmod -R g\+rwX"):
        cache.get(key)
    assert cache.path(key).is_file() and not cache.quarantine_dir.exists()


# ------------------------------------------------------------------------- hosted cache path
def _deterministic(params: dict, n: int) -> tuple[str, str, None]:
    return f"answer to {params['messages'][-1]['content']}", "end_turn", None


@pytest.mark.parametrize("kind", ["edited", "other-key", "json-list"])
def test_hosted_record_is_quarantined_and_asked_again(tmp_path, monkeypatch, kind):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    corrupt, reason = CORRUPTIONS[kind]
    reqs = [HostedRequest(f"h{i}", "claude-fake-1", "Be terse.",
                          ({"role": "user", "content": f"question {i}"},), 32)
            for i in range(3)]
    with FakeAnthropic() as fake:
        fake.responder = _deterministic

        def client() -> AnthropicClient:
            return AnthropicClient(tmp_path / "cache", base_url=fake.base_url, max_retries=1,
                                   timeout=10.0, batch_threshold=100, poll_interval=0.0)

        clean = client().complete(reqs)
        keys = [r.cache_key() for r in reqs]
        second = client()
        corrupt(second.cache.path(keys[0]), second.cache.path(keys[2]))
        before = fake.count("messages")
        again = second.complete(reqs)
    assert fake.count("messages") - before == 1 and second.api_calls == 1
    assert [a.text for a in again] == [c.text for c in clean]
    assert [a.cached for a in again] == [False, True, True]
    assert (second.cache.quarantine_dir / f"{keys[0]}.json.{reason}").is_file()


# ------------------------------------------------------------------------- cache verify
def _mixed_cache(root: Path) -> tuple[ResponseCache, dict[str, str]]:
    """Three sound records, one per corruption kind, a misplaced file, a writer's temporary
    and the folders verify must skip. Returns the cache and key -> expected reason."""
    cache = ResponseCache(root)
    backend = CachedBackend(Echo(), cache, model_id="m@1")
    reqs = requests(3 + len(CORRUPTIONS))
    backend.generate(reqs, PARAMS)
    keys = [backend.key(r, PARAMS) for r in reqs]
    expected = {}
    for (corrupt, reason), key in zip(CORRUPTIONS.values(), keys[3:], strict=True):
        corrupt(cache.path(key), cache.path(keys[0]))
        expected[key] = reason
    stray = cache.path(keys[1]).parent / "notes.json"
    stray.write_text("{}")
    expected["notes"] = "misplaced"
    (cache.path(keys[2]).parent / f".{keys[2]}.json.abc.tmp").write_text("half")
    (root / "_batches").mkdir()
    (root / "_batches" / "b.json").write_text("[]")
    return cache, expected


def test_verify_counts_and_fixes_a_mixed_cache(tmp_path):
    cache, expected = _mixed_cache(tmp_path / "c")
    report = cache.verify()
    assert report.ok == 3
    found = {p.stem if p.name == "notes.json" else p.name.removesuffix(".json"): reason
             for reason, items in report.problems.items() for p, _ in items}
    assert found == expected and not report.moved
    assert not cache.quarantine_dir.exists()  # checking alone moves nothing

    fixed = cache.verify(fix=True)
    assert len(fixed.moved) == len(expected) == fixed.n_problems
    assert sorted(p.name for p in cache.quarantine_dir.iterdir()) == sorted(
        f"{k}.json.{r}" for k, r in expected.items())
    after = cache.verify()
    assert after.ok == 3 and after.n_problems == 0


def test_cli_cache_verify(tmp_path, capsys):
    cache, expected = _mixed_cache(tmp_path / "c")
    n = len(expected)
    assert cli(["cache", "verify", str(cache.root)]) == 1
    out, err = capsys.readouterr()
    assert f"{3 + n} record(s), 3 ok, {n} with problems" in out and "--fix" in err
    counts = {}
    for reason in set(expected.values()):
        line = next(x for x in out.splitlines() if x.strip().startswith(f"{reason}:")
                    and x.strip().split(":")[1].strip().isdigit())
        counts[reason] = int(line.split(":")[1])
    assert counts == {r: list(expected.values()).count(r) for r in set(expected.values())}
    assert not cache.quarantine_dir.exists()

    assert cli(["cache", "verify", str(cache.root), "--fix"]) == 0
    out, _ = capsys.readouterr()
    assert f"moved {n} record(s) to {cache.quarantine_dir}" in out
    assert cli(["cache", "verify", str(cache.root)]) == 0
    assert "3 record(s), 3 ok, 0 with problems" in capsys.readouterr().out

    assert cli(["cache", "verify", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in capsys.readouterr().err


def test_record_format(tmp_path):
    """What a record file holds: its key, a checksum binding key and content, the record."""
    cache = ResponseCache(tmp_path / "c")
    key = "0f" * 32
    path = cache.put(key, {"text": "é", "n": 1})
    body = envelope(path)
    assert set(body) == {"format", "key", "sha256", "record"} and body["key"] == key
    assert body["record"] == {"text": "é", "n": 1} and cache.get(key) == body["record"]
    assert path.read_bytes() == encode_record(key, {"n": 1, "text": "é"}).encode()
    # the checksum covers the key: the same content under another key has another checksum
    assert envelope(cache.put("1f" * 32, body["record"]))["sha256"] != body["sha256"]
    assert os.listdir(path.parent) == [path.name]
