"""The Anthropic Messages / Message Batches client and the hosted generation backend."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from motivation_profiles.backends.base import (
    ChatRequest,
    Completion,
    SamplingParams,
)
from motivation_profiles.backends.cache import ResponseCache, _canonical, ledger_table
from motivation_profiles.backends.hosted import (
    API_KEY_ENV,
    BATCH_DISCOUNT,
    CACHE_READ,
    CACHE_WRITE_1H,
    CACHE_WRITE_5M,
    CUSTOM_ID_RE,
    HostedGenerationError,
    HostedRequest,
    HostedResponse,
    MissingAPIKeyError,
    UnsupportedSamplingError,
    _is_default,
    _Malformed,
    _record,
    _response,
)
from motivation_profiles.core.io import write_json_atomic

if TYPE_CHECKING:
    import polars as pl

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------- client
class AnthropicClient:
    """Anthropic Messages / Message Batches behind a response cache. See the module docstring.

    ``prices``: model -> (input $/Mtok, output $/Mtok), used by ``ledger_frame``.
    ``api_calls`` counts ``messages.create`` calls and batches created; ``batch_polls`` counts
    ``batches.retrieve`` calls.
    """

    def __init__(
        self,
        cache: ResponseCache | str | os.PathLike[str],
        *,
        state_dir: str | os.PathLike[str] | None = None,
        base_url: str | None = None,
        max_retries: int = 6,
        timeout: float = 600.0,
        batch_threshold: int = 20,
        poll_interval: float = 30.0,
        max_resubmits: int = 2,
        max_batch_requests: int = 100_000,
        max_batch_bytes: int = 200_000_000,
        prices: Mapping[str, Sequence[float]] | None = None,
        show_progress: bool = False,
    ):
        key = os.environ.get(API_KEY_ENV)
        if not key:
            raise MissingAPIKeyError(
                f"the environment variable {API_KEY_ENV} is not set; the anthropic hosted "
                f"backend needs it (export {API_KEY_ENV}=... in the job's environment)")
        import anthropic

        self._sdk = anthropic.Anthropic(api_key=key, base_url=base_url,
                                        max_retries=max_retries, timeout=timeout)
        del key
        self.cache = cache if isinstance(cache, ResponseCache) else ResponseCache(cache)
        self.state_dir = Path(state_dir) if state_dir is not None else self.cache.root / "_batches"
        self.batch_threshold = batch_threshold
        self.poll_interval = poll_interval
        self.max_resubmits = max_resubmits
        self.max_batch_requests = max_batch_requests
        self.max_batch_bytes = max_batch_bytes
        self.prices = dict(prices or {})
        self.show_progress = show_progress
        self.api_calls = 0
        self.batch_polls = 0
        self.ledger: list[dict[str, Any]] = []

    def __repr__(self) -> str:  # never shows the key
        return (f"AnthropicClient(cache={str(self.cache.root)!r}, "
                f"batch_threshold={self.batch_threshold}, api_calls={self.api_calls})")

    # ------------------------------------------------------------------ public
    def complete(self, requests: Sequence[HostedRequest]) -> list[HostedResponse]:
        """One ``HostedResponse`` per request, in order; failures carry ``error``."""
        keys = [r.cache_key() for r in requests]
        hits, todo = self.cache.split(list(zip(keys, requests, strict=True)))
        # key -> (record, answered from the cache)
        done: dict[str, tuple[dict[str, Any], bool]] = {k: (r, True) for k, r in hits.items()}
        errors: dict[str, str] = {}
        if todo:
            log.info("%d of %d hosted requests not cached", len(todo), len(requests))
            attempts: Counter[str] = Counter()
            self._resume(todo, done, errors, attempts)
            while True:
                eligible = {k: r for k, r in todo.items() if attempts[k] <= self.max_resubmits}
                if not eligible:
                    break
                for k in eligible:
                    attempts[k] += 1
                if len(eligible) >= self.batch_threshold:
                    got, failed = self._run_batches(eligible)
                else:
                    got, failed = self._run_messages(eligible)
                for k, record in got.items():
                    done[k] = (record, False)
                    todo.pop(k, None)
                for k, (msg, retryable) in failed.items():
                    errors[k] = msg
                    if not retryable:  # final: the SDK already retried, or the API refused
                        todo.pop(k, None)
                if failed:
                    log.warning("%d hosted request(s) failed this round (e.g. %s)", len(failed),
                                next(iter(failed.values()))[0])
            for k in list(errors):
                if k in todo:
                    errors[k] = f"{errors[k]} (after {attempts[k]} attempts)"
        out = []
        for req, key in zip(requests, keys, strict=True):
            if key in done:
                record, cached = done[key]
                out.append(_response(req.custom_id, key, record, cached))
            else:
                msg = errors.get(key, "not answered")
                out.append(HostedResponse(req.custom_id, "", None, 0, 0, False, error=msg,
                                          cache_key=key, model=req.model))
        return out

    def ledger_frame(self, prices: Mapping[str, Sequence[float]] | None = None) -> pl.DataFrame:
        """Usage of every API-answered response, with ``cost_usd`` from the price table.

        Input tokens at the input price, output tokens at the output price, prompt-cache
        writes at 1.25x (5-minute) or 2x (1-hour) and reads at 0.1x the input price; batch
        requests at half price. A model missing from the table gets a null (unknown) cost,
        which sums skip.
        """
        table = dict(self.prices if prices is None else prices)
        rows = []
        missing = set()
        for row in self.ledger:
            row = dict(row)
            price = table.get(row["model"])
            if price is None:
                missing.add(row["model"])
                row["cost_usd"] = None
            else:
                p_in, p_out = (float(x) for x in price)
                cw_1h = row["cache_creation_1h_input_tokens"]
                cw_5m = row["cache_creation_input_tokens"] - cw_1h
                cost = (row["input_tokens"] * p_in + row["output_tokens"] * p_out
                        + cw_5m * CACHE_WRITE_5M * p_in + cw_1h * CACHE_WRITE_1H * p_in
                        + row["cache_read_input_tokens"] * CACHE_READ * p_in) / 1e6
                row["cost_usd"] = cost * (BATCH_DISCOUNT if row["batch"] else 1.0)
            rows.append(row)
        if missing:
            log.warning("no price for model(s) %s; their cost is null (unknown)",
                        sorted(missing))
        return ledger_table(rows)

    def pending_batches(self) -> list[Path]:
        """State files of batches submitted but not yet collected."""
        return sorted(self.state_dir.glob("*.json")) if self.state_dir.is_dir() else []

    # ------------------------------------------------------------------ messages
    def _run_messages(self, todo: Mapping[str, HostedRequest]):
        import anthropic
        from tqdm.auto import tqdm

        got: dict[str, dict[str, Any]] = {}
        failed: dict[str, tuple[str, bool]] = {}
        for key, req in tqdm(list(todo.items()), desc="messages", unit="req",
                             disable=not self.show_progress, mininterval=5):
            self.api_calls += 1
            try:
                message = self._sdk.messages.create(**req.api_params())
                record = _record(message, batch_id=None, custom_id=req.custom_id)
            except anthropic.APIResponseValidationError as exc:
                failed[key] = (f"malformed response: {exc.message}", True)
                continue
            except anthropic.APIStatusError as exc:  # the SDK already retried what it should
                failed[key] = (f"HTTP {exc.status_code}: {_error_text(exc)}", False)
                continue
            except anthropic.APIConnectionError as exc:
                failed[key] = (f"connection error: {exc.message}", False)
                continue
            except ValueError as exc:  # _Malformed, or a body that is not JSON at all
                failed[key] = (f"malformed response: {type(exc).__name__}: {exc}", True)
                continue
            self._store(key, req, record, batch=False)
            got[key] = record
        return got, failed

    # ------------------------------------------------------------------ batches
    def _run_batches(self, todo: Mapping[str, HostedRequest]):
        ids = _custom_ids(todo)
        chunks: list[list[str]] = [[]]
        size = 0
        for key, req in todo.items():
            n = len(_canonical(req.api_params())) + 100
            if chunks[-1] and (len(chunks[-1]) >= self.max_batch_requests
                               or size + n > self.max_batch_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append(key)
            size += n
        states = [self._submit(chunk, todo, ids) for chunk in chunks]
        got: dict[str, dict[str, Any]] = {}
        failed: dict[str, tuple[str, bool]] = {}
        for state in states:
            g, f = self._collect(state, todo)
            got.update(g)
            failed.update(f)
        return got, failed

    def _submit(self, chunk: Sequence[str], todo: Mapping[str, HostedRequest],
                ids: Mapping[str, str]) -> dict[str, Any]:
        body = [{"custom_id": ids[k], "params": todo[k].api_params()} for k in chunk]
        self.api_calls += 1
        batch = self._sdk.messages.batches.create(requests=body)
        state = {
            "batch_id": batch.id,
            "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "requests": {ids[k]: k for k in chunk},
            "models": sorted({todo[k].model for k in chunk}),
        }
        write_json_atomic(self._state_path(batch.id), state, indent=1)
        log.info("submitted batch %s with %d requests", batch.id, len(chunk))
        return state

    def _state_path(self, batch_id: str) -> Path:
        return self.state_dir / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', batch_id)}.json"

    def _wait_for_batch(self, batch_id: str) -> Any:
        """Poll ``retrieve`` until the batch has ended; return the batch object."""
        while True:
            batch = self._sdk.messages.batches.retrieve(batch_id)
            self.batch_polls += 1
            if batch.processing_status == "ended":
                return batch
            c = batch.request_counts
            log.info("batch %s %s: %d processing, %d succeeded, %d errored", batch_id,
                     batch.processing_status, c.processing, c.succeeded, c.errored)
            time.sleep(self.poll_interval)

    def _collect(self, state: Mapping[str, Any], todo: Mapping[str, HostedRequest]):
        """Wait for one batch, cache what succeeded, report the rest; retire its state file."""
        batch_id = state["batch_id"]
        cid_to_key: Mapping[str, str] = state["requests"]
        self._wait_for_batch(batch_id)
        got: dict[str, dict[str, Any]] = {}
        failed: dict[str, tuple[str, bool]] = {}
        seen: set[str] = set()
        for item in self._sdk.messages.batches.results(batch_id):
            key = cid_to_key.get(item.custom_id)
            if key is None:
                log.warning("batch %s: result for unknown custom_id %r ignored", batch_id,
                            item.custom_id)
                continue
            if item.custom_id in seen:
                continue
            seen.add(item.custom_id)
            result = item.result
            kind = getattr(result, "type", None)
            if kind == "succeeded":
                try:
                    record = _record(result.message, batch_id=batch_id,
                                     custom_id=item.custom_id)
                except _Malformed as exc:
                    failed[key] = (f"batch {batch_id}: {exc}", True)
                    continue
                req = todo.get(key)
                self._store(key, req, record, batch=True)
                got[key] = record
            elif kind == "errored":
                err = getattr(getattr(result, "error", None), "error", None)
                detail = (f"{getattr(err, 'type', 'error')}: {getattr(err, 'message', '')}"
                          if err is not None else "unknown error")
                failed[key] = (f"batch {batch_id}: errored ({detail})", True)
            else:
                failed[key] = (f"batch {batch_id}: {kind}", True)
        for cid, key in cid_to_key.items():
            if cid not in seen:
                failed[key] = (f"batch {batch_id}: no result for custom_id {cid}", True)
        self._retire(batch_id)
        log.info("batch %s collected: %d succeeded, %d to resubmit", batch_id, len(got),
                 len(failed))
        return got, failed

    def _retire(self, batch_id: str) -> None:
        src = self._state_path(batch_id)
        dst = self.state_dir / "done" / src.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dst)
        except FileNotFoundError:  # another job collected the same batch
            pass

    def _resume(self, todo: dict[str, HostedRequest], done: dict, errors: dict[str, str],
                attempts: Counter[str]) -> None:
        """Collect batches an earlier job submitted for some of ``todo`` before paying again."""
        import anthropic

        wanted = set(todo)
        for path in self.pending_batches():
            state = self._read_state(path)
            if state is None:
                continue
            keys = set(state["requests"].values())
            if not keys & wanted:
                continue
            log.info("resuming batch %s (%d requests) from %s", state["batch_id"], len(keys),
                     path)
            try:
                got, failed = self._collect(state, todo)
            except anthropic.NotFoundError:
                log.warning("batch %s no longer exists; its requests will be resubmitted",
                            state["batch_id"])
                self._retire(state["batch_id"])
                continue
            for k in keys & set(todo):
                attempts[k] += 1
            for k, record in got.items():
                if k in todo:
                    done[k] = (record, False)
                    todo.pop(k)
            for k, (msg, _) in failed.items():
                if k in todo:
                    errors[k] = msg

    def _read_state(self, path: Path) -> dict[str, Any] | None:
        """A pending batch's state file, or None when it cannot be used: then it is moved to
        ``state_dir/quarantine`` (kept: it names a batch that may hold paid answers) with a
        warning, and its requests are asked for again."""
        try:
            state = json.loads(path.read_bytes().decode("utf-8"))
            problem = ("" if isinstance(state, dict) and isinstance(state.get("batch_id"), str)
                       and isinstance(state.get("requests"), dict)
                       and all(isinstance(k, str) and isinstance(v, str)
                               for k, v in state["requests"].items())
                       else "not an object with batch_id and a requests map of strings")
        except FileNotFoundError:  # collected by another job meanwhile
            return None
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            problem = f"not JSON ({exc})"
        if not problem:
            return state
        dest = self.state_dir / "quarantine" / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, dest)
        except FileNotFoundError:
            pass
        log.warning("batch state file %s is unusable (%s); moved to %s, its requests will be "
                    "asked for again", path, problem, dest)
        return None

    # ------------------------------------------------------------------ bookkeeping
    def _store(self, key: str, req: HostedRequest | None, record: dict[str, Any], *,
               batch: bool) -> None:
        self.cache.put(key, record)
        usage = record.get("usage") or {}
        creation = usage.get("cache_creation") or {}
        self.ledger.append({
            "model": record.get("model") or (req.model if req else ""),
            "custom_id": record.get("custom_id"),
            "cache_key": key,
            "batch": batch,
            "batch_id": record.get("batch_id"),
            "input_tokens": int(usage.get("input_tokens") or 0),
            "output_tokens": int(usage.get("output_tokens") or 0),
            "cache_creation_input_tokens": int(usage.get("cache_creation_input_tokens") or 0),
            "cache_read_input_tokens": int(usage.get("cache_read_input_tokens") or 0),
            "cache_creation_1h_input_tokens": int(creation.get("ephemeral_1h_input_tokens")
                                                  or 0),
            "stop_reason": record.get("stop_reason"),
        })


def _error_text(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        err = body["error"]
        return f"{err.get('type', 'error')}: {err.get('message', '')}"
    return str(getattr(exc, "message", exc))


def _custom_ids(todo: Mapping[str, HostedRequest]) -> dict[str, str]:
    """A batch ``custom_id`` per cache key: the caller's id when it is valid and unused,
    otherwise the cache key itself (64 hex digits, unique since requests are deduplicated)."""
    used: set[str] = set()
    ids: dict[str, str] = {}
    derived = set(todo)  # keys may be used as ids; never hand one to a caller id
    for key, req in todo.items():
        cid = req.custom_id
        if not CUSTOM_ID_RE.fullmatch(cid or "") or cid in used or cid in derived:
            cid = key
        used.add(cid)
        ids[key] = cid
    return ids


# ---------------------------------------------------------------------------------- adapter
@dataclass
class HostedBackend:
    """The local ``GenerationBackend`` interface on top of ``AnthropicClient``.

    Leading system messages become ``system``; ``ChatRequest.seed`` is the sample index;
    ``SamplingParams.stop`` becomes ``stop_sequences``, and since the API leaves the matched
    stop string out of the text, it is appended back (the local backends keep it).
    The API takes no sampling parameters (see ``HostedRequest``): ``temperature == 1`` and
    ``top_p == 1`` are what it does anyway; other values raise ``UnsupportedSamplingError``
    unless ``strict_sampling=False``, which logs a warning and samples at the API's default.
    ``finish_reason`` is ``"length"`` for ``max_tokens`` and ``model_context_window_exceeded``,
    else ``"stop"``. Requests that still fail raise ``HostedGenerationError`` after every
    answered request has been cached, so a rerun only asks for the failures.
    """

    client: AnthropicClient
    model: str
    name: str = "anthropic"
    strict_sampling: bool = True
    last_responses: list[HostedResponse] = field(default_factory=list, repr=False)

    def to_hosted(self, request: ChatRequest, params: SamplingParams) -> HostedRequest:
        msgs = list(request.messages)
        system_parts = []
        while msgs and msgs[0].get("role") == "system":
            system_parts.append(str(msgs.pop(0)["content"]))
        if any(m.get("role") == "system" for m in msgs):
            raise ValueError(f"request {request.request_id}: system messages must come first")
        return HostedRequest(
            custom_id=request.request_id,
            model=self.model,
            system="\n\n".join(system_parts) if system_parts else None,
            messages=tuple({"role": m["role"], "content": m["content"]} for m in msgs),
            max_tokens=params.max_new_tokens,
            sample_index=request.seed,
            stop_sequences=tuple(params.stop),
        )

    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams
                 ) -> list[Completion]:
        if not (_is_default(params.temperature) and _is_default(params.top_p)):
            msg = (f"temperature={params.temperature}, top_p={params.top_p}: the Anthropic API "
                   "accepts no sampling parameters; hosted models sample at temperature 1")
            if self.strict_sampling:
                raise UnsupportedSamplingError(msg)
            log.warning("%s; sampling at the API's default instead", msg)
        hosted = [self.to_hosted(r, params) for r in requests]
        responses = self.client.complete(hosted)
        self.last_responses = responses
        failures = {r.custom_id: r.error for r in responses if r.error is not None}
        if failures:
            raise HostedGenerationError(failures)
        out = []
        for req, resp in zip(requests, responses, strict=True):
            text = resp.text
            if resp.stop_reason == "stop_sequence" and resp.stop_sequence:
                text += resp.stop_sequence
            finish = ("length" if resp.stop_reason in ("max_tokens",
                                                       "model_context_window_exceeded")
                      else "stop")
            prompt = (resp.input_tokens + resp.cache_creation_input_tokens
                      + resp.cache_read_input_tokens)
            out.append(Completion(req.request_id, text, finish, prompt, resp.output_tokens))
        return out
