"""The content-addressed response cache and the cache wrapper for local backends."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from motivation_profiles.backends.base import (
    ChatRequest,
    Completion,
    GenerationBackend,
    SamplingParams,
)
from motivation_profiles.core.io import write_text_atomic

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- records
RECORD_FORMAT = 2
"""Version of the on-disk record: ``{"format": 2, "key", "sha256", "record"}``."""

PROBLEMS = ("undecodable", "wrong-shape", "legacy", "wrong-key", "checksum", "misplaced")
"""Why a record file is not used, as named in warnings, quarantine suffixes and ``verify``:
not UTF-8 / not JSON; JSON of the wrong shape (not an object, a field missing or mistyped);
the earlier format without key and checksum; the key of another request; content that does
not match its checksum (edited or damaged); (``verify`` only) a file not named
``<key[:2]>/<key>.json``."""

QUARANTINE = "quarantine"

_KEY_RE = re.compile(r"[0-9a-f]{64}")

# Fields each known provider's records must have (checked after the checksum, so a record
# that passes is one our writers produced). Records of other providers need none.
_FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "local": {"text": str, "finish_reason": str, "prompt_tokens": int,
              "completion_tokens": int},
    "anthropic": {"text": str, "stop_reason": (str, type(None)), "usage": dict, "model": str},
}


class Problem(NamedTuple):
    reason: str  # one of PROBLEMS
    detail: str


def record_checksum(key: str, record: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of (key, record): binds the content to its key."""
    text = _canonical({"key": key, "record": record})
    # surrogatepass: a lone surrogate (an escaped one in an edited file) fails the checksum
    # instead of raising
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def encode_record(key: str, record: Mapping[str, Any]) -> str:
    """The file content of ``record`` stored under ``key``."""
    body = {"format": RECORD_FORMAT, "key": key, "sha256": record_checksum(key, record),
            "record": dict(record)}
    return json.dumps(body, sort_keys=True, ensure_ascii=False) + "\n"


def decode_record(data: bytes, key: str) -> tuple[dict[str, Any] | None, Problem | None]:
    """(record, None) when ``data`` is a sound record of ``key``, else (None, the problem)."""
    try:
        body = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, Problem("undecodable", f"not UTF-8 ({exc.reason} at byte {exc.start})")
    except (ValueError, RecursionError) as exc:
        return None, Problem("undecodable", f"not JSON ({exc})")
    if not isinstance(body, dict):
        return None, Problem("wrong-shape", f"a JSON {type(body).__name__}, not an object")
    if "format" not in body and "text" in body:
        return None, Problem("legacy", "a record of the earlier format, without its key and "
                                       "checksum (cannot be verified)")
    missing = [f for f in ("format", "key", "sha256", "record") if f not in body]
    if missing:
        return None, Problem("wrong-shape", f"lacks field(s) {', '.join(missing)}")
    if body["format"] != RECORD_FORMAT:
        return None, Problem("wrong-shape", f"format {body['format']!r}, not {RECORD_FORMAT}")
    stored, record = body["key"], body["record"]
    if not isinstance(stored, str) or not isinstance(body["sha256"], str) \
            or not isinstance(record, dict):
        return None, Problem("wrong-shape", "key and sha256 must be strings, record an object")
    if stored != key:
        return None, Problem("wrong-key", f"holds the record of key {stored[:16]}...")
    if record_checksum(key, record) != body["sha256"]:
        return None, Problem("checksum", "content does not match its sha256 (edited or damaged)")
    wrong = _wrong_fields(record)
    if wrong:
        return None, Problem("wrong-shape", wrong)
    return record, None


def _wrong_fields(record: Mapping[str, Any]) -> str:
    provider = record.get("provider")
    if not isinstance(provider, str):
        return "" if provider is None else "provider is not a string"
    fields = _FIELDS.get("local" if provider.startswith("local-") else provider, {})
    bad = [f for f, t in fields.items()
           if f not in record or not isinstance(record[f], t)
           or (t is int and isinstance(record[f], bool))]
    if provider == "anthropic" and not bad:
        usage = record["usage"]
        bad = [f"usage.{f}" for f in ("input_tokens", "output_tokens")
               if not isinstance(usage.get(f), int)]
    return f"{provider} record: field(s) {', '.join(bad)} missing or mistyped" if bad else ""


@dataclass
class VerifyReport:
    """What ``ResponseCache.verify`` found: sound records, problems by reason (path, detail),
    and the files moved to quarantine (with ``fix``)."""

    root: Path
    ok: int = 0
    problems: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)
    moved: list[Path] = field(default_factory=list)

    @property
    def n_problems(self) -> int:
        return sum(len(v) for v in self.problems.values())


# ---------------------------------------------------------------------------------- cache
class ResponseCache:
    """Content-addressed JSON records on disk: ``root/<key[:2]>/<key>.json``.

    Each file holds ``{"format": 2, "key", "sha256", "record"}``: its own key and the sha256
    of (key, record). A file that does not decode, has the wrong shape, holds another key, fails
    its checksum, or is of the earlier format (no key or checksum: neither an edit nor a
    misfiled record could be detected, and local records of that format were sampled with
    batch-dependent random streams) is a miss: a warning names it and the reason, and it is
    moved to ``root/quarantine/<name>.<reason>`` (kept for inspection, never read again), so
    the caller recomputes it. ``verify`` checks a whole cache.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    @staticmethod
    def key(provider: str, model: str, parameters: Mapping[str, Any],
            messages: Sequence[Mapping[str, Any]], sample_index: int) -> str:
        body = {
            "provider": provider,
            "model": model,
            "parameters": dict(parameters),
            "messages": _plain(messages),
            "sample_index": int(sample_index),
        }
        return hashlib.sha256(_canonical(body).encode()).hexdigest()

    def path(self, key: str) -> Path:
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"not a cache key (64 lowercase hex digits): {key!r}")
        return self.root / key[:2] / f"{key}.json"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / QUARANTINE

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under ``key``; None when there is none or it is unusable (then
        quarantined, see the class docstring)."""
        p = self.path(key)
        try:
            data, seen = _read(p)
        except FileNotFoundError:
            return None
        record, problem = decode_record(data, key)
        if problem is None:
            return record
        dest = self.quarantine(p, problem, seen)
        log.warning("cache record %s is unusable (%s: %s); %s, and it is treated as a miss "
                    "(recomputed)", p, problem.reason, problem.detail,
                    f"moved to {dest}" if dest else "not moved (another job moved or rewrote it)")
        return None

    def put(self, key: str, record: Mapping[str, Any]) -> Path:
        p = self.path(key)
        write_text_atomic(p, encode_record(key, record))
        return p

    def __contains__(self, key: str) -> bool:
        """Whether a file exists under ``key`` (sound or not; ``get`` decides)."""
        return self.path(key).is_file()

    def quarantine(self, path: Path, problem: Problem, seen: os.stat_result | None = None
                   ) -> Path | None:
        """Move ``path`` to ``quarantine/<name>.<reason>`` (``.<n>`` added if taken). With
        ``seen`` (the stat of the bytes judged), a file replaced since (by a concurrent writer)
        is left alone; returns None then, or when the file is already gone."""
        try:
            now = path.stat()
        except FileNotFoundError:
            return None
        if seen is not None and _identity(now) != _identity(seen):
            return None
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        base = self.quarantine_dir / f"{path.name}.{problem.reason}"
        dest, n = base, 0
        while dest.exists():
            n += 1
            dest = base.with_name(f"{base.name}.{n}")
        try:
            os.rename(path, dest)
        except FileNotFoundError:  # another job moved it first
            return None
        return dest

    def verify(self, fix: bool = False) -> VerifyReport:
        """Check every record file (``<2 hex>/<name>``; temporaries of writers in progress
        are skipped). With ``fix``, move each problem file to the quarantine folder."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: no such cache directory")
        report = VerifyReport(self.root)
        shards = sorted(d for d in self.root.iterdir()
                        if d.is_dir() and re.fullmatch(r"[0-9a-f]{2}", d.name))
        for shard in shards:
            for f in sorted(shard.iterdir()):
                if f.name.startswith("."):  # a writer's temporary (atomic_path)
                    continue
                name = f.name.removesuffix(".json")
                if not (f.name.endswith(".json") and _KEY_RE.fullmatch(name)
                        and name[:2] == shard.name) or not f.is_file():
                    problem, seen = Problem("misplaced", "not <key[:2]>/<key>.json"), None
                else:
                    try:
                        data, seen = _read(f)
                    except FileNotFoundError:  # removed meanwhile
                        continue
                    problem = decode_record(data, name)[1]
                if problem is None:
                    report.ok += 1
                    continue
                report.problems.setdefault(problem.reason, []).append((f, problem.detail))
                if fix:
                    dest = self.quarantine(f, problem, seen)
                    if dest is not None:
                        report.moved.append(dest)
        return report

    def split(self, keyed: Sequence[tuple[str, Any]]
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """(key, item) pairs -> (cached records by key, uncached items by key), each key once
        (repeats of one key in a call are answered by one request), in first-seen order."""
        hits: dict[str, dict[str, Any]] = {}
        misses: dict[str, Any] = {}
        for key, item in keyed:
            if key in hits or key in misses:
                continue
            record = self.get(key)
            if record is not None:
                hits[key] = record
            else:
                misses[key] = item
        return hits, misses


def _read(path: Path) -> tuple[bytes, os.stat_result]:
    """The bytes of ``path`` and the stat of the file they came from. A record this user may
    not read is an error (not a miss): recomputing it would pay again and fail to store."""
    try:
        with open(path, "rb") as fh:
            return fh.read(), os.fstat(fh.fileno())
    except PermissionError as exc:
        try:
            st = path.stat()
            who = f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}"
        except OSError:
            who = "its mode unknown"
        raise PermissionError(
            exc.errno, f"cannot read cache record {path} ({who}): records written before the "
            "cache followed the umask are private to their writer; its owner can run "
            f"`chmod -R g+rwX {path.parents[1]}` (and use umask 002 for a shared cache)"
        ) from exc


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


# ---------------------------------------------------------------------------------- local cache
class CachedBackend:
    """A local ``GenerationBackend`` behind the ``ResponseCache``, like the hosted calls.

    Key: ``ResponseCache.key(f"local-{inner.name}", model_id, params.as_dict(), messages,
    request.seed)``, so ``model_id`` should pin the weights (e.g. name@sha256 of the
    checkpoint). Hits are answered from the cache; the misses (identical keys once) go to
    ``inner.generate`` in one call, in request order, and are stored before being returned.
    ``calls`` counts requests sent to ``inner``, ``hits`` requests answered from the cache.
    ``ledger_frame()`` has ``AnthropicClient.ledger_frame``'s columns (``LEDGER_COLUMNS``) for
    the requests ``inner`` answered, at cost 0.0 and never batched.
    """

    def __init__(self, inner: GenerationBackend, cache: ResponseCache | str | os.PathLike[str],
                 model_id: str):
        self.inner = inner
        self.cache = cache if isinstance(cache, ResponseCache) else ResponseCache(cache)
        self.model_id = model_id
        self.name = inner.name
        self.calls = 0
        self.hits = 0
        self.ledger: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return (f"CachedBackend(inner={self.inner.name!r}, model_id={self.model_id!r}, "
                f"calls={self.calls}, hits={self.hits})")

    @property
    def provider(self) -> str:
        return f"local-{self.inner.name}"

    def key(self, request: ChatRequest, params: SamplingParams) -> str:
        return ResponseCache.key(self.provider, self.model_id, params.as_dict(),
                                 request.messages, request.seed)

    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams
                 ) -> list[Completion]:
        keys = [self.key(r, params) for r in requests]
        records, misses = self.cache.split(list(zip(keys, requests, strict=True)))
        self.hits += sum(1 for k in keys if k in records)
        if misses:
            log.info("%d of %d local requests not cached; generating with %s", len(misses),
                     len(requests), self.inner.name)
            todo = list(misses.values())
            self.calls += len(todo)
            outs = self.inner.generate(todo, params)
            if len(outs) != len(todo):
                raise RuntimeError(f"backend {self.inner.name} returned {len(outs)} completions "
                                   f"for {len(todo)} requests")
            for key, req, out in zip(misses, todo, outs, strict=True):
                record = {"provider": self.provider, "model": self.model_id,
                          "text": out.text, "finish_reason": out.finish_reason,
                          "prompt_tokens": int(out.prompt_tokens),
                          "completion_tokens": int(out.completion_tokens)}
                self.cache.put(key, record)
                records[key] = record
                self.ledger.append({
                    "model": self.model_id, "custom_id": req.request_id, "cache_key": key,
                    "batch": False, "batch_id": None, "input_tokens": int(out.prompt_tokens),
                    "output_tokens": int(out.completion_tokens),
                    "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                    "cache_creation_1h_input_tokens": 0, "stop_reason": out.finish_reason,
                    "cost_usd": 0.0,
                })
        return [Completion(req.request_id, str(records[key]["text"]),
                           str(records[key]["finish_reason"]),
                           int(records[key]["prompt_tokens"]),
                           int(records[key]["completion_tokens"]))
                for req, key in zip(requests, keys, strict=True)]

    def ledger_frame(self) -> pl.DataFrame:
        """Usage of every request ``inner`` answered (cache hits excluded), cost 0.0."""
        return ledger_table(self.ledger)


LEDGER_COLUMNS = [
    "model", "custom_id", "cache_key", "batch", "batch_id", "input_tokens", "output_tokens",
    "cache_creation_input_tokens", "cache_read_input_tokens", "cache_creation_1h_input_tokens",
    "stop_reason", "cost_usd",
]


def ledger_schema() -> dict[str, Any]:
    """The ledger's polars dtypes, in ``LEDGER_COLUMNS`` order (polars is imported here, not
    when a backend is)."""
    import polars as pl

    tokens = pl.Int64
    return {"model": pl.Utf8, "custom_id": pl.Utf8, "cache_key": pl.Utf8, "batch": pl.Boolean,
            "batch_id": pl.Utf8, "input_tokens": tokens, "output_tokens": tokens,
            "cache_creation_input_tokens": tokens, "cache_read_input_tokens": tokens,
            "cache_creation_1h_input_tokens": tokens, "stop_reason": pl.Utf8,
            "cost_usd": pl.Float64}


def ledger_table(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """The ledger of ``rows`` (``LEDGER_COLUMNS``; a missing key is null, others are ignored),
    typed by ``ledger_schema`` even when empty."""
    import polars as pl

    schema = ledger_schema()
    return pl.DataFrame({c: [r.get(c) for r in rows] for c in schema}, schema=schema)


def _canonical(value: Any) -> str:
    # Kept local (not config.canonical_json) so cache keys stay stable whatever happens there.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _plain(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """JSON-ready copies of messages (tuples become lists, mappings dicts)."""
    return json.loads(json.dumps([dict(m) for m in messages]))
