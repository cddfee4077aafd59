"""A local fake of the part of the Anthropic HTTP API that ``motivation_profiles.backends``
uses.

Endpoints: ``POST /v1/messages``, ``POST /v1/messages/batches``,
``GET /v1/messages/batches/{id}`` and ``GET /v1/messages/batches/{id}/results`` (JSONL). The
JSON shapes follow the SDK's types (``anthropic/types/message.py``,
``anthropic/types/messages/message_batch*.py``).

Answers depend on the request: by default the text is
``echo:<digest>:<n> max_tokens=<max_tokens>``, where ``digest`` is ``request_digest(params)``
(sha256 of model, system, messages, temperature, top_p and stop sequences, first 12 hex digits)
and ``n`` counts earlier answers to the identical request, so repeats differ. ``responder`` can
replace this.

Fault injection: ``fail_next`` (HTTP 429 / 5xx / 4xx with ``retry-after: 0`` and
``retry-after-ms``), ``malformed_next`` (a 200 whose JSON body is cut off),
``fail_in_batch`` (custom_ids errored / expired / canceled for their first N batch attempts),
``shuffle_results`` and ``in_progress_polls`` (a batch stays in_progress for K retrieves).
Every request is recorded in ``requests`` (method, path, parsed body, headers without
credentials).

Use ``with FakeAnthropic() as fake: ... fake.base_url ...``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

API_KEY = "test-key-not-a-secret"
CUSTOM_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               404: "not_found_error", 408: "timeout_error", 429: "rate_limit_error",
               500: "api_error", 529: "overloaded_error"}
REDACTED_HEADERS = {"x-api-key", "authorization"}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_digest(params: dict[str, Any]) -> str:
    """What the default answer's text is derived from (12 hex digits)."""
    key = {k: params.get(k) for k in ("model", "system", "messages", "temperature", "top_p",
                                      "stop_sequences")}
    return hashlib.sha256(_canonical(key).encode()).hexdigest()[:12]


def _now() -> datetime:
    return datetime.now(UTC)


def _ts(t: datetime | None) -> str | None:
    return None if t is None else t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    headers: dict[str, str]

    @property
    def endpoint(self) -> str:
        return _route(self.method, self.path)[0]


@dataclass
class _Batch:
    id: str
    created_at: datetime
    requests: list[dict[str, Any]]
    results: list[dict[str, Any]]
    polls_left: int
    ended_at: datetime | None = None
    result_order: list[str] = field(default_factory=list)


def _route(method: str, path: str) -> tuple[str, str | None]:
    if method == "POST" and path == "/v1/messages":
        return "messages", None
    if method == "POST" and path == "/v1/messages/batches":
        return "batch_create", None
    m = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results)?", path)
    if method == "GET" and m:
        return ("batch_results" if m.group(2) else "batch_retrieve"), m.group(1)
    return "unknown", None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms per request
    fake: FakeAnthropic  # set on the per-server subclass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.fake._handle(self, "POST")

    def do_GET(self) -> None:  # noqa: N802
        self.fake._handle(self, "GET")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class FakeAnthropic:
    """A threaded HTTP server on 127.0.0.1 (a free port) answering like the Anthropic API."""

    def __init__(self, *, api_key: str = API_KEY, retry_after_ms: int = 1, seed: int = 0):
        self.api_key = api_key
        self.retry_after_ms = retry_after_ms
        self.lock = threading.RLock()
        self.requests: list[Recorded] = []
        self.batches: dict[str, _Batch] = {}
        self.shuffle_results = False
        self.in_progress_polls = 0
        self.responder: Callable[[dict[str, Any], int], tuple[str, str, str | None]] | None = None
        self.usage_extra: dict[str, Any] = {}
        self._faults: deque[tuple[str | None, str, int]] = deque()
        self._batch_faults: dict[str, deque[str]] = {}
        self._answers: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._rng = random.Random(seed)
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAnthropic:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ fault injection
    def fail_next(self, n: int = 1, status: int = 429, endpoint: str | None = None) -> None:
        """The next ``n`` requests (to ``endpoint``: messages, batch_create, batch_retrieve,
        batch_results; None: any) get HTTP ``status`` with an Anthropic error body."""
        with self.lock:
            self._faults.extend([(endpoint, "status", status)] * n)

    def malformed_next(self, n: int = 1, endpoint: str | None = "messages") -> None:
        """The next ``n`` requests to ``endpoint`` get a 200 with a truncated JSON body."""
        with self.lock:
            self._faults.extend([(endpoint, "malformed", 200)] * n)

    def fail_in_batch(self, custom_ids: Iterable[str], outcome: str = "errored",
                      times: int = 1) -> None:
        """These custom_ids come back ``outcome`` (errored / expired / canceled) in the first
        ``times`` batches that contain them, then succeed."""
        if outcome not in ("errored", "expired", "canceled"):
            raise ValueError(outcome)
        with self.lock:
            for cid in custom_ids:
                self._batch_faults.setdefault(cid, deque()).extend([outcome] * times)

    # ------------------------------------------------------------------ inspection
    def calls(self, endpoint: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if endpoint is None or r.endpoint == endpoint]

    def count(self, endpoint: str | None = None) -> int:
        return len(self.calls(endpoint))

    # ------------------------------------------------------------------ HTTP
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        path = urlsplit(h.path).path
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
            raw_bad = True
        else:
            raw_bad = False
        headers = {k.lower(): v for k, v in h.headers.items()
                   if k.lower() not in REDACTED_HEADERS}
        endpoint, batch_id = _route(method, path)
        with self.lock:
            self.requests.append(Recorded(method, path, body, headers))
            fault = None
            for i, (ep, kind, status) in enumerate(self._faults):
                if ep is None or ep == endpoint:
                    fault = (kind, status)
                    del self._faults[i]
                    break
        if fault is not None:
            kind, status = fault
            if kind == "malformed":
                return self._send(h, 200, b'{"id": "msg_broken", "type": "message", "content": [',
                                  "application/json")
            return self._error(h, status, f"injected {status}")
        # This SDK sends the key as "Authorization: Bearer ..."; the API also takes x-api-key.
        if self.api_key not in (h.headers.get("x-api-key"),
                                (h.headers.get("authorization") or "").removeprefix("Bearer ")):
            return self._error(h, 401, "invalid API key")
        if raw_bad:
            return self._error(h, 400, "request body is not valid JSON")
        if endpoint == "messages":
            problem = _check_params(body)
            if problem:
                return self._error(h, 400, problem)
            return self._json(h, 200, self._message(body, batch=False))
        if endpoint == "batch_create":
            return self._create_batch(h, body)
        if endpoint == "batch_retrieve":
            with self.lock:
                batch = self.batches.get(batch_id or "")
                if batch is None:
                    return self._error(h, 404, f"no batch {batch_id}")
                if batch.polls_left > 0:
                    batch.polls_left -= 1
                elif batch.ended_at is None:
                    batch.ended_at = _now()
                return self._json(h, 200, self._batch_object(batch))
        if endpoint == "batch_results":
            return self._results(h, batch_id or "")
        return self._error(h, 404, f"no route for {method} {path}")

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: bytes, ctype: str,
              extra: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("content-type", ctype)
        h.send_header("content-length", str(len(payload)))
        h.send_header("request-id", f"req_fake_{next(self._ids)}")
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(payload)

    def _json(self, h: BaseHTTPRequestHandler, status: int, obj: Any) -> None:
        self._send(h, status, json.dumps(obj).encode(), "application/json")

    def _error(self, h: BaseHTTPRequestHandler, status: int, message: str) -> None:
        body = {"type": "error",
                "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}
        extra = {}
        if status in (408, 409, 429) or status >= 500:
            extra = {"retry-after": "0", "retry-after-ms": str(self.retry_after_ms)}
        self._send(h, status, json.dumps(body).encode(), "application/json", extra)

    # ------------------------------------------------------------------ answers
    def _message(self, params: dict[str, Any], *, batch: bool) -> dict[str, Any]:
        digest = request_digest(params)
        with self.lock:
            n = self._answers[digest]
            self._answers[digest] += 1
            msg_id = f"msg_fake_{next(self._ids):06d}"
        if self.responder is not None:
            text, stop_reason, stop_sequence = self.responder(params, n)
        else:
            text = f"echo:{digest}:{n} max_tokens={params['max_tokens']}"
            stop_reason, stop_sequence = "end_turn", None
        prompt = _canonical([params.get("system"), params["messages"]])
        usage = {"input_tokens": max(1, len(prompt) // 4),
                 "output_tokens": max(1, len(text.split())),
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                 "service_tier": "batch" if batch else "standard", **self.usage_extra}
        return {"id": msg_id, "type": "message", "role": "assistant", "model": params["model"],
                "content": [{"type": "text", "text": text}], "stop_reason": stop_reason,
                "stop_sequence": stop_sequence, "usage": usage}

    def _create_batch(self, h: BaseHTTPRequestHandler, body: Any) -> None:
        reqs = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(reqs, list) or not reqs:
            return self._error(h, 400, "requests: expected a non-empty list")
        seen: set[str] = set()
        for i, r in enumerate(reqs):
            cid = r.get("custom_id") if isinstance(r, dict) else None
            if not isinstance(cid, str) or not CUSTOM_ID_RE.fullmatch(cid):
                return self._error(h, 400, f"requests.{i}.custom_id: invalid {cid!r}")
            if cid in seen:
                return self._error(h, 400, f"requests.{i}.custom_id: duplicate {cid!r}")
            seen.add(cid)
            problem = _check_params(r.get("params"))
            if problem:
                return self._error(h, 400, f"requests.{i}.params: {problem}")
        results = []
        for r in reqs:
            cid = r["custom_id"]
            with self.lock:
                q = self._batch_faults.get(cid)
                outcome = q.popleft() if q else "succeeded"
            if outcome == "succeeded":
                result = {"type": "succeeded", "message": self._message(r["params"], batch=True)}
            elif outcome == "errored":
                result = {"type": "errored", "error": {
                    "type": "error", "error": {"type": "api_error", "message": "fake failure"}}}
            else:
                result = {"type": outcome}
            results.append({"custom_id": cid, "result": result})
        with self.lock:
            bid = f"msgbatch_fake_{next(self._ids):06d}"
            batch = _Batch(bid, _now(), reqs, results, self.in_progress_polls)
            self.batches[bid] = batch
            return self._json(h, 200, self._batch_object(batch))

    def _batch_object(self, b: _Batch) -> dict[str, Any]:
        ended = b.ended_at is not None
        counts = Counter(r["result"]["type"] for r in b.results) if ended else Counter()
        return {
            "id": b.id, "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else len(b.requests),
                               "succeeded": counts["succeeded"], "errored": counts["errored"],
                               "canceled": counts["canceled"], "expired": counts["expired"]},
            "created_at": _ts(b.created_at), "expires_at": _ts(b.created_at + timedelta(days=1)),
            "ended_at": _ts(b.ended_at),
            "results_url": f"{self.base_url}/v1/messages/batches/{b.id}/results" if ended
            else None,
            "archived_at": None, "cancel_initiated_at": None,
        }

    def _results(self, h: BaseHTTPRequestHandler, batch_id: str) -> None:
        with self.lock:
            batch = self.batches.get(batch_id)
            if batch is None or batch.ended_at is None:
                return self._error(h, 404, f"no results for batch {batch_id}")
            lines = list(batch.results)
            if self.shuffle_results:
                self._rng.shuffle(lines)
            batch.result_order = [x["custom_id"] for x in lines]
        payload = "".join(json.dumps(x) + "\n" for x in lines).encode()
        self._send(h, 200, payload, "application/binary")


def _check_params(p: Any) -> str | None:
    if not isinstance(p, dict):
        return "expected an object"
    if not isinstance(p.get("model"), str):
        return "model: required"
    if not isinstance(p.get("max_tokens"), int) or p["max_tokens"] < 1:
        return "max_tokens: required positive integer"
    if not isinstance(p.get("messages"), list) or not p["messages"]:
        return "messages: required non-empty list"
    for name in ("temperature", "top_p", "top_k"):  # API version 2026-10-21 rejects these
        if name in p:
            return f"{name}: Extra inputs are not permitted"
    return None


class Killed(BaseException):
    """A job killed between submitting a batch and polling it (raised instead of polling)."""


def kill_before_poll(client, monkeypatch) -> None:
    """Make ``client`` die right after it has submitted (and recorded) a batch."""

    def die(batch_id):
        raise Killed(batch_id)

    monkeypatch.setattr(client, "_wait_for_batch", die)
