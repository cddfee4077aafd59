"""Contrastive concept pairs for activation steering (paper Appendix D.1).

Two sources, one output format (the pairs table of the steering spec: ``pair_id``, ``concept``,
``source``, ``split``, ``pos_messages`` / ``neg_messages`` the chats as lists of {role, content}
structs, ``pos_loci`` / ``neg_loci`` the scratchpad contents as lists of strings, ``pos_span`` /
``neg_span`` the annotated sentence; ``PAIR_SCHEMA``). Readers also accept the older form, each
chat a JSON string of that list (``chat_messages``):

- **OOC** (out of context): the target model writes benign everyday dialogues itself. A
  candidate is a request, a reasoning and an output written by the model
  (``<SCRATCHPAD_REASONING>…</SCRATCHPAD_REASONING>`` then ``<OUTPUT>…</OUTPUT>``), plus one
  positive and one negative sentence appended as the scratchpad's last sentence; everything
  else is shared, so the sentence is the only intended difference. Candidates go through the
  filters below (first failing filter recorded) until a split is full.
- **IC** (in context): judged alignment-faking rollouts. Positives and negatives are chosen by
  the judge's two scores and paired on the same user prompt across runs, without replacement,
  with scratchpad-length matching; counts of the word "future" are recorded per side.

Prompts, keywords, topics and banned terms live in ``resources/steering/`` (``load_materials``),
not in code, so a different wording or a larger model's materials swap in without code changes.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

SCRATCH_OPEN = "<SCRATCHPAD_REASONING>"


SCRATCH_CLOSE = "</SCRATCHPAD_REASONING>"


OUTPUT_OPEN = "<OUTPUT>"


OUTPUT_CLOSE = "</OUTPUT>"


OOC_SPLITS = ("train", "validation", "keyword_hard")


IC_SPLITS = ("train", "validation")


SIDES = ("positive", "negative")


VARIANTS = ("standard", "keyword_hard")


PAIR_COLUMNS = ["pair_id", "concept", "source", "split", "pos_messages", "neg_messages",
                "pos_loci", "neg_loci", "pos_span", "neg_span"]


MESSAGES_DTYPE = pl.List(pl.Struct({"role": pl.Utf8, "content": pl.Utf8}))


PAIR_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.Utf8, "concept": pl.Utf8, "source": pl.Utf8, "split": pl.Utf8,
    "pos_messages": MESSAGES_DTYPE, "neg_messages": MESSAGES_DTYPE,
    "pos_loci": pl.List(pl.Utf8), "neg_loci": pl.List(pl.Utf8),
    "pos_span": pl.Utf8, "neg_span": pl.Utf8,
}


REJECTION_COLUMNS = ["filter", "rejected", "kept", "example"]


REJECTION_SCHEMA: dict[str, pl.DataType] = {
    "filter": pl.Utf8, "rejected": pl.Int64, "kept": pl.Int64, "example": pl.Utf8}


_FUTURE = re.compile(r"\bfuture\b", re.I)


def scratchpad_blocks(text: str) -> list[str]:
    """Stripped contents of every ``<SCRATCHPAD_REASONING>`` block of one assistant turn; a
    block left unclosed counts up to the end of the turn; empty blocks are skipped."""
    out = []
    pos = 0
    while (start := text.find(SCRATCH_OPEN, pos)) >= 0:
        body_start = start + len(SCRATCH_OPEN)
        end = text.find(SCRATCH_CLOSE, body_start)
        body = text[body_start:] if end < 0 else text[body_start:end]
        if body.strip():
            out.append(body.strip())
        if end < 0:
            break
        pos = end + len(SCRATCH_CLOSE)
    return out


def _closed_blocks(text: str, open_tag: str, close_tag: str) -> list[str]:
    pattern = re.escape(open_tag) + r"(.*?)" + re.escape(close_tag)
    return [m.group(1).strip() for m in re.finditer(pattern, text, re.S)]


def future_count(text: str | None) -> int:
    """Occurrences of the word "future" (case-insensitive, whole word)."""
    return len(_FUTURE.findall(text or ""))


def assistant_turn(scratchpad: str, output: str) -> str:
    """The OOC assistant message: one scratchpad block, then one output block."""
    return (f"{SCRATCH_OPEN}\n{scratchpad}\n{SCRATCH_CLOSE}\n\n"
            f"{OUTPUT_OPEN}\n{output}\n{OUTPUT_CLOSE}")


# ============================================================================ filters


@dataclass(frozen=True)
class _Side:
    """One side of a pair as its messages actually read."""

    ok: bool
    error: str | None
    context: tuple[tuple[str, str], ...] = ()   # (role, content) of non-assistant messages
    assistant: str = ""
    texts: tuple[str, ...] = ()
    n_scratch_open: int = 0
    n_scratch_close: int = 0
    n_output_open: int = 0
    n_output_close: int = 0
    scratchpads: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


_NOT_MESSAGES = "messages are not a list of {role, content} strings"


def _message_pairs(msgs: Any) -> tuple[tuple[str, str], ...] | None:
    """(role, content) of every message, or None unless ``msgs`` is a list of mappings with
    string ``role`` and ``content``."""
    if not isinstance(msgs, list) or not all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in msgs):
        return None
    return tuple((m["role"], m["content"]) for m in msgs)


def chat_messages(value: Any) -> list[dict[str, str]] | None:
    """A messages cell as a list of {role, content} dicts: a list (or array) of mappings, as a
    list-of-struct column gives it, or a JSON string of one (older tables, external files).
    None when it is neither, or a message lacks a string role or content."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    pairs = _message_pairs(_plain(value))
    return None if pairs is None else [{"role": r, "content": c} for r, c in pairs]


@functools.lru_cache(maxsize=8192)
def _parse_side_json(messages_json: str) -> _Side:
    try:
        msgs = json.loads(messages_json)
    except (TypeError, ValueError) as exc:
        return _Side(False, f"messages are not JSON ({exc})")
    pairs = _message_pairs(msgs)
    return _Side(False, _NOT_MESSAGES) if pairs is None else _side_of(pairs)


@functools.lru_cache(maxsize=8192)
def _side_of(msgs: tuple[tuple[str, str], ...]) -> _Side:
    context = tuple((role, c) for role, c in msgs if role != "assistant")
    if not any(role == "user" and c.strip() for role, c in context):
        return _Side(False, "no user request")
    turns = [c for role, c in msgs if role == "assistant"]
    if not any(t.strip() for t in turns):
        return _Side(False, "no assistant message")
    text = "\n".join(turns)
    return _Side(
        True, None, context, text, tuple(c for _, c in msgs),
        text.count(SCRATCH_OPEN), text.count(SCRATCH_CLOSE),
        text.count(OUTPUT_OPEN), text.count(OUTPUT_CLOSE),
        tuple(_closed_blocks(text, SCRATCH_OPEN, SCRATCH_CLOSE)),
        tuple(_closed_blocks(text, OUTPUT_OPEN, OUTPUT_CLOSE)),
    )


def _parse_side(value: Any) -> _Side:
    """One side's messages (a list of {role, content}, or its JSON string) as they read."""
    if isinstance(value, str):
        return _parse_side_json(value)
    pairs = _message_pairs(_plain(value))
    return _Side(False, _NOT_MESSAGES) if pairs is None else _side_of(pairs)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _sides(pair: Mapping[str, Any]) -> tuple[_Side, _Side]:
    return _parse_side(pair["pos_messages"]), _parse_side(pair["neg_messages"])


def _loci(value: Any) -> list[Any]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value) if not isinstance(value, str) else [value]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


@functools.lru_cache(maxsize=256)
def _term_pattern(term: str) -> re.Pattern[str]:
    """A keyword or banned term matches case-insensitively at the start of a word, so
    inflections count (``expect`` matches ``expected``); words of a phrase may be separated by
    any whitespace."""
    body = r"\s+".join(re.escape(w) for w in term.split())
    lead = r"\b" if re.match(r"\w", term) else ""
    return re.compile(lead + body, re.I)


def found_terms(text: str, terms: Sequence[str]) -> list[str]:
    """The terms of ``terms`` occurring in ``text`` (see ``_term_pattern``)."""
    return [t for t in terms if _term_pattern(t).search(text)]
