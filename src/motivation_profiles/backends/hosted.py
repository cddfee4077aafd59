"""Hosted-model clients: a content-addressed response cache and the Anthropic backend.

``ResponseCache`` stores one JSON record per request under the sha256 of the canonical JSON of
(provider, model, parameters, messages, sample index). The sample index is part of the key, so
asking one prompt for samples 0..k gives k+1 distinct entries (and k+1 distinct API answers).
Writes go to a temporary sibling and are renamed onto the final name, so concurrent jobs on a
shared filesystem never read a half-written record; two writers of one key: the last rename wins.
Each record carries its key and a sha256 of (key, content); a record that does not decode, has
the wrong shape, holds another key or fails its checksum is a miss: logged with its path and
moved to ``<cache>/quarantine/``, then asked for again (``motivation-profiles cache verify``
checks a whole cache). Files follow the umask, so a cache shared by a group works under
``umask 002``.

``AnthropicClient.complete`` answers a list of ``HostedRequest`` objects:

1. requests whose key is in the cache are answered from it, with no API call;
2. pending Message Batches recorded on disk by an earlier (killed) job that cover some of the
   uncached requests are polled and collected first, so a paid batch is never paid again;
3. the rest go to the Messages API one by one when there are fewer than ``batch_threshold`` of
   them, and otherwise to Message Batches. A batch's id and its ``custom_id`` -> cache-key map
   are written to ``state_dir`` right after creation and before polling; results are matched
   by ``custom_id``, never by position;
4. batch items that come back errored, expired, canceled or missing, and Messages answers whose
   body cannot be parsed, are submitted again with identical parameters (``max_tokens``
   included), up to ``max_resubmits`` times; what still fails is returned with ``error`` set,
   never dropped, and never cached (a rerun asks again).

Sampling: the API version SDK 2.x speaks accepts no temperature / top_p / top_k (a 400 at any
value), so none is sent; requests asking for anything but the default are refused with
``UnsupportedSamplingError`` (see ``HostedRequest``). Distinct samples of one prompt come from
the API's own sampling, one request per ``sample_index``.

HTTP-level retries (408/409/429/5xx, connection errors, with backoff and ``retry-after``) are
left to the SDK (``max_retries``); this module adds no retry loop of its own for them. A
Messages request that still fails after the SDK's retries (or that the API refuses, e.g. 400)
is returned with ``error`` set. Failures to create or poll a batch propagate: the job fails,
and its rerun resumes from the cache and the batch state files.

The API key is read from ``ANTHROPIC_API_KEY`` when an ``AnthropicClient`` is constructed, never
at import; it is neither stored on this module's objects nor logged. ``anthropic`` itself is
imported lazily.

``HostedBackend`` puts the client behind the local ``GenerationBackend`` interface.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from motivation_profiles.backends.cache import ResponseCache, _plain

if TYPE_CHECKING:
    pass


API_KEY_ENV = "ANTHROPIC_API_KEY"


PROVIDER = "anthropic"


CUSTOM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


BATCH_DISCOUNT = 0.5


# Prompt-cache multipliers on the input price: 5-minute writes, 1-hour writes, reads.
CACHE_WRITE_5M = 1.25


CACHE_WRITE_1H = 2.0


CACHE_READ = 0.1




class MissingAPIKeyError(RuntimeError):
    """``ANTHROPIC_API_KEY`` is not set but a hosted client was asked for."""


class UnsupportedSamplingError(ValueError):
    """A sampling parameter the hosted API does not accept (see ``HostedRequest``)."""


class HostedGenerationError(RuntimeError):
    """Some hosted requests still failed after the SDK's retries and our resubmissions."""

    def __init__(self, failures: Mapping[str, str]):
        self.failures = dict(failures)
        shown = "; ".join(f"{k}: {v}" for k, v in list(self.failures.items())[:5])
        more = f" (and {len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
        super().__init__(f"{len(self.failures)} hosted request(s) failed: {shown}{more}")






# ---------------------------------------------------------------------------------- requests
def _is_default(value: float | None) -> bool:
    return value is None or float(value) == 1.0


@dataclass(frozen=True)
class HostedRequest:
    """One Messages API request. ``sample_index`` tells repeats of one prompt apart.

    The API version the SDK 2.x speaks (``anthropic-version: 2026-10-21``) accepts no sampling
    parameters: any ``temperature`` / ``top_p`` / ``top_k``, even at its default, is a 400, and
    the SDK has no arguments for them. Hosted models sample at their default (temperature 1).
    ``temperature`` and ``top_p`` are therefore accepted only as ``None`` or ``1.0`` (what the
    API does anyway) and are never sent; anything else raises ``UnsupportedSamplingError``
    rather than being dropped silently. ``system`` is a string or a list of text blocks (e.g.
    with ``cache_control``).
    """

    custom_id: str
    model: str
    system: str | Sequence[Mapping[str, Any]] | None
    messages: Sequence[Mapping[str, Any]]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    sample_index: int = 0
    stop_sequences: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (_is_default(self.temperature) and _is_default(self.top_p)):
            raise UnsupportedSamplingError(
                f"request {self.custom_id}: temperature={self.temperature}, "
                f"top_p={self.top_p}: the Anthropic API (version 2026-10-21, SDK 2.x) accepts "
                "no sampling parameters; hosted models sample at temperature 1 (use None or 1.0)")
        if int(self.max_tokens) < 1:
            raise ValueError(f"request {self.custom_id}: max_tokens must be >= 1")

    def api_params(self) -> dict[str, Any]:
        """The request body; identical on every submission of this request."""
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": int(self.max_tokens),
            "messages": _plain(self.messages),
        }
        if self.system is not None:
            params["system"] = (self.system if isinstance(self.system, str)
                                else _plain(self.system))
        if self.stop_sequences:
            params["stop_sequences"] = list(self.stop_sequences)
        return params

    def cache_parameters(self) -> dict[str, Any]:
        """Every parameter that shapes the answer, i.e. everything sent but model/messages."""
        params = self.api_params()
        return {"max_tokens": params["max_tokens"], "system": params.get("system"),
                "stop_sequences": params.get("stop_sequences", [])}

    def cache_key(self, provider: str = PROVIDER) -> str:
        return ResponseCache.key(provider, self.model, self.cache_parameters(), self.messages,
                                 self.sample_index)


@dataclass(frozen=True)
class HostedResponse:
    custom_id: str
    text: str
    stop_reason: str | None
    input_tokens: int
    output_tokens: int
    cached: bool
    error: str | None = None
    stop_sequence: str | None = None
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_key: str = ""
    model: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def _response(custom_id: str, key: str, record: Mapping[str, Any], cached: bool
              ) -> HostedResponse:
    usage = record.get("usage") or {}
    return HostedResponse(
        custom_id=custom_id, text=record.get("text", ""), stop_reason=record.get("stop_reason"),
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0), cached=cached,
        stop_sequence=record.get("stop_sequence"),
        cache_creation_input_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        cache_read_input_tokens=int(usage.get("cache_read_input_tokens") or 0),
        cache_key=key, model=record.get("model", ""),
    )


class _Malformed(ValueError):
    """An answer that does not have the shape of a Message."""


def _record(message: Any, *, batch_id: str | None, custom_id: str | None) -> dict[str, Any]:
    """The cache record of one Message (SDK object)."""
    try:
        content = message.content
        text = "".join(b.text for b in content if getattr(b, "type", None) == "text")
        usage = message.usage.model_dump(mode="json", exclude_none=True)
        record = {
            "provider": PROVIDER,
            "text": text,
            "stop_reason": message.stop_reason,
            "stop_sequence": getattr(message, "stop_sequence", None),
            "usage": usage,
            "model": message.model,
            "message_id": message.id,
            "batch_id": batch_id,
            "custom_id": custom_id,
        }
        for name in ("input_tokens", "output_tokens"):
            int(usage[name])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise _Malformed(f"malformed message: {type(exc).__name__}: {exc}") from exc
    return record
