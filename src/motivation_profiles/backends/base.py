"""The generation interface shared by every local backend, and its transformers implementation.

A backend takes ``ChatRequest`` objects (a conversation plus a seed) and one ``SamplingParams``
and returns one ``Completion`` per request, in request order, with the text of the new
assistant turn and why it stopped (``"stop"``: end of turn or a stop string, kept in the text;
``"length"``: the new-token budget or the context ran out). The rollout loop, the vLLM backend
and steering hooks all plug into this interface.

The ``hf`` backend batches requests and computes the KV cache of the prompt prefix shared by
all requests (the system prompt, in the AF evaluation) once, then reuses it for every batch.
With ``steering`` set, both the prefix computation and generation run inside
``steering.steer``, so every prompt and generated position is steered, and the prefix cache is
keyed on the steering's identity.

Random streams are per request. A sampled request draws from a stream seeded by
``stream_seed(request)``, a hash of its messages (canonical JSON) and its ``seed`` (the caller's
seed or sample index), never of its id, its position, its batch or the other requests in the
call. Both local backends key their streams this way, so what a request gets does not depend on
the batch size, on which other requests were cache misses, or on where a resumed job restarts
(up to floating-point effects of batching on the logits; see ``hf.GumbelSampler``).

A prompt that leaves no room for an answer is an error, not a result: ``check_prompts_fit``
raises ``PromptTooLongError`` before anything is generated when a prompt plus the smallest
useful answer (``MIN_ANSWER_TOKENS`` new tokens, or ``max_new_tokens`` if smaller) does not fit
``max_model_len``.

Backends that expose token log-probabilities (``hf``; ``vllm`` through prompt log-probs) also
implement ``ContinuationScorer.continuation_logprobs``: the log-probability of each of a few
candidate strings continuing a conversation's trailing assistant message, each candidate's
full token sequence (``continuation_tokens`` says which tokens are scored). The rollout loop
uses it for ``p_accept`` and the ``forced_choice`` output mode, the judge for its
probability-weighted scores. Hosted backends do not have it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens, "stop": list(self.stop)}


@dataclass(frozen=True)
class ChatRequest:
    """One conversation to continue. ``seed``: the caller's seed or sample index (with the
    messages, it selects the random stream, ``stream_seed``). ``prompt_overflow``: what a local
    backend does when the prompt leaves no room for the smallest useful answer: ``"raise"``
    (``PromptTooLongError`` before anything of the call is generated), or ``"length"`` for a
    prompt that may legitimately have grown to the context (a continuation turn of a long
    transcript): generate what fits, or return an empty ``"length"`` completion when nothing
    does. Not part of any cache key."""

    request_id: str
    messages: tuple[Mapping[str, str], ...]
    seed: int = 0
    prompt_overflow: str = "raise"

    def __post_init__(self) -> None:
        if self.prompt_overflow not in ("raise", "length"):
            raise ValueError(f"request {self.request_id!r}: prompt_overflow must be 'raise' or "
                             f"'length', got {self.prompt_overflow!r}")


@dataclass(frozen=True)
class Completion:
    request_id: str
    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


class GenerationBackend(Protocol):
    """What every local generation backend provides."""

    name: str

    def generate(self, requests: Sequence[ChatRequest], params: SamplingParams
                 ) -> list[Completion]: ...


class ContinuationScorer(Protocol):
    """A backend that can score candidate continuations with the model's own log-probs."""

    def continuation_logprobs(self, requests: Sequence[ChatRequest], candidates: Sequence[str]
                              ) -> list[list[float] | None]: ...


def can_score(backend: Any) -> bool:
    """Whether ``backend`` exposes token log-probabilities (``continuation_logprobs``)."""
    return callable(getattr(backend, "continuation_logprobs", None))


def continuation_tokens(encode: Any, messages: Sequence[Mapping[str, str]],
                        candidates: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """The token ids that score ``candidates`` as continuations of ``messages``, whose last
    message is an assistant turn being continued: ``(context, tails)`` with ``context + tails[i]``
    the encoding of the conversation with ``candidates[i]`` appended to that message.

    A candidate's first token may merge with the end of the message (BPE): the context is then
    cut back to the tokens every candidate's encoding shares, and those tokens of the message
    are scored with each candidate, so every candidate is scored in the same context and the
    comparison is between the full strings. ``encode``: messages -> token ids (the backend's
    chat encoding)."""
    msgs = [dict(m) for m in messages]
    if not candidates:
        raise ValueError("continuation_tokens needs at least one candidate")
    if not msgs or msgs[-1].get("role") != "assistant":
        raise ValueError("scoring continuations needs a trailing assistant message to continue")
    if len(set(candidates)) != len(candidates) or not all(candidates):
        raise ValueError(f"candidates must be distinct non-empty strings, got {list(candidates)}")
    base = list(encode(msgs))
    full = [list(encode([*msgs[:-1], {**msgs[-1], "content": msgs[-1]["content"] + c}]))
            for c in candidates]
    k = min(longest_common_prefix([base, f]) for f in full)
    k = min(k, *(len(f) - 1 for f in full))   # every candidate keeps >= 1 scored token
    if k < 1:
        raise ValueError("cannot score continuations of an empty conversation")
    return full[0][:k], [f[k:] for f in full]


def stream_seed(request: ChatRequest) -> int:
    """Seed of ``request``'s random stream: a function of its messages (canonical JSON) and its
    ``seed`` only, not of its ``request_id`` or of any other request. Both local backends seed
    sampling with it (``hf``: one ``torch.Generator`` per row; ``vllm``: the request's
    ``SamplingParams.seed``), so a request's sample is the same whatever it is batched with."""
    body = json.dumps({"messages": [dict(m) for m in request.messages],
                       "seed": int(request.seed)},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(b"motivation-profiles/stream/v1\0" + body.encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


MIN_ANSWER_TOKENS = 16
"""The smallest answer worth generating: a prompt must leave room for this many new tokens
(or for ``max_new_tokens``, if that is smaller)."""


def answer_floor(params: SamplingParams) -> int:
    """New tokens a prompt must leave room for under ``params``."""
    return min(MIN_ANSWER_TOKENS, params.max_new_tokens)


class PromptTooLongError(ValueError):
    """A request's prompt plus the smallest useful answer does not fit the context.

    Raised before anything is generated; carries the numbers (``request_id``,
    ``prompt_tokens``, ``answer_tokens``, ``max_model_len``) and how many ``other`` requests of
    the same call do not fit either, so callers can add what they know (e.g. the prompt file)."""

    def __init__(self, request_id: str, prompt_tokens: int, answer_tokens: int,
                 max_model_len: int, others: int = 0):
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.answer_tokens = answer_tokens
        self.max_model_len = max_model_len
        self.others = others
        msg = (f"request {request_id!r}: a prompt of {prompt_tokens} tokens plus the smallest "
               f"useful answer ({answer_tokens} new tokens) does not fit max_model_len "
               f"{max_model_len} ({prompt_tokens + answer_tokens} > {max_model_len}); "
               "shorten the prompt or raise the model's max_model_len")
        if others:
            msg += f" ({others} more request(s) of this call do not fit either)"
        super().__init__(msg)

    def __reduce__(self):  # picklable with its numbers (the default would pass only the message)
        return (type(self), (self.request_id, self.prompt_tokens, self.answer_tokens,
                             self.max_model_len, self.others))


def check_prompts_fit(requests: Sequence[ChatRequest], prompt_tokens: Sequence[int],
                      params: SamplingParams, max_model_len: int) -> None:
    """Raise ``PromptTooLongError`` for the first request (``prompt_overflow="raise"``) whose
    prompt (``prompt_tokens``, in request order) plus ``answer_floor(params)`` new tokens
    exceeds ``max_model_len``."""
    if params.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    floor = answer_floor(params)
    bad = [(r, n) for r, n in zip(requests, prompt_tokens, strict=True)
           if n + floor > max_model_len and r.prompt_overflow == "raise"]
    if bad:
        req, n = bad[0]
        raise PromptTooLongError(req.request_id, n, floor, max_model_len, len(bad) - 1)


def longest_common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence of ``seqs`` shares (vectorised: the hf backend's
    KV reuse compares each prompt with every stored run)."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = np.asarray(seqs[0][:n])
    differ = np.zeros(n, dtype=bool)
    for s in seqs[1:]:
        differ |= np.asarray(s[:n]) != first
    at = np.flatnonzero(differ)
    return int(at[0]) if len(at) else n


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Truncate ``text`` just after the first stop string; report whether one occurred."""
    hits = [(text.find(s), s) for s in stops if s in text]
    if not hits:
        return text, False
    pos, s = min(hits)
    return text[: pos + len(s)], True
