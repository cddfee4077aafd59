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
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


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
    request_id: str
    messages: tuple[Mapping[str, str], ...]
    seed: int = 0


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


def batch_seed(requests: Sequence[ChatRequest]) -> int:
    """Sampling seed for one batch, derived from its requests' ids and seeds.

    Transformers samples a batch from one RNG, so the seed of a batch is a function of its
    composition; batches are formed deterministically from the config, so reruns reproduce.
    """
    key = "|".join(f"{r.request_id}:{r.seed}" for r in requests)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") % (2**63)


def longest_common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Truncate ``text`` just after the first stop string; report whether one occurred."""
    hits = [(text.find(s), s) for s in stops if s in text]
    if not hits:
        return text, False
    pos, s = min(hits)
    return text[: pos + len(s)], True
