"""The content-addressed response cache and the cache wrapper for local backends."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


# ---------------------------------------------------------------------------------- cache
class ResponseCache:
    """Content-addressed JSON records on disk: ``root/<key[:2]>/<key>.json``."""

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
        if not re.fullmatch(r"[0-9a-f]{64}", key):
            raise ValueError(f"not a cache key (64 lowercase hex digits): {key!r}")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.path(key)
        try:
            text = p.read_text()
        except FileNotFoundError:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:  # cannot come from our writers; treat as a miss
            log.warning("cache entry %s is not valid JSON; ignoring it", p)
            return None

    def put(self, key: str, record: Mapping[str, Any]) -> Path:
        p = self.path(key)
        write_text_atomic(p, json.dumps(dict(record), sort_keys=True, ensure_ascii=False) + "\n")
        return p

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

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
