"""Out-of-context pairs: benign dialogues written by the target model itself."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.backends.base import (
    ChatRequest,
    Completion,
    GenerationBackend,
    SamplingParams,
)
from motivation_profiles.steering.materials import OOCMaterials
from motivation_profiles.steering.pair_filters import _LABEL_PREFIX, _TAG, PairFilter
from motivation_profiles.steering.pair_format import (
    OUTPUT_CLOSE,
    OUTPUT_OPEN,
    PAIR_COLUMNS,
    PAIR_SCHEMA,
    SCRATCH_CLOSE,
    SCRATCH_OPEN,
    SIDES,
    assistant_turn,
)

log = logging.getLogger(__name__)


_SENTENCE_END = re.compile(r"[.!?](?=[\s\"')\]]|$)")


# A candidate's row (``_candidate_row``), in column order; ``parse_error`` is dropped from the
# pairs table.
CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    **{c: PAIR_SCHEMA[c] for c in PAIR_COLUMNS},
    "pos_chars": pl.Int64, "neg_chars": pl.Int64, "topic": pl.Utf8, "candidate": pl.Int64,
    "request": pl.Utf8, "output": pl.Utf8, "parse_error": pl.Utf8,
    "scratchpad_chars": pl.Int64, "pos_span_chars": pl.Int64, "neg_span_chars": pl.Int64,
}


# ============================================================================ OOC generation


def _seed(*parts: object) -> int:
    key = "|".join(map(str, parts))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass
class _Candidate:
    index: int
    topic: str
    pos_opener: str
    neg_opener: str
    request: str | None = None
    scratchpad: str | None = None
    output: str | None = None
    pos_span: str | None = None
    neg_span: str | None = None
    error: str | None = None


def _clean_request(text: str) -> str | None:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    line = _LABEL_PREFIX.sub("", lines[0].strip()).strip().strip("\"'“”*").strip()
    line = _LABEL_PREFIX.sub("", line).strip().strip("\"'“”").strip()
    if len(line.split()) < 3 or len(line) > 300 or _TAG.search(line):
        return None
    return line


def _cut_block(text: str, truncated: bool, min_words: int) -> str | None:
    """Text up to the first tag, trimmed to whole sentences when it was cut short."""
    m = _TAG.search(text)
    closed = m is not None
    body = text[: m.start()] if m else text
    body = body.strip()
    if truncated or not closed:
        ends = list(_SENTENCE_END.finditer(body))
        if not ends:
            return None
        body = body[: ends[-1].end()].strip()
    if len(body.split()) < min_words:
        return None
    if not _SENTENCE_END.search(body[-1:] + " "):
        body += "."
    return body


def _clean_sentence(opener: str, completion: Completion) -> str | None:
    """The prefilled opener plus the model's words up to the first sentence end."""
    text = opener + completion.text if opener else completion.text.lstrip()
    first_line = text.split("\n", 1)[0]
    if _TAG.search(first_line):
        return None
    m = _SENTENCE_END.search(first_line, len(opener))
    if m is not None:
        sentence = first_line[: m.end()]
    elif completion.finish_reason == "stop":
        sentence = first_line.rstrip() + "."
    else:
        return None  # cut off mid-sentence
    sentence = sentence.strip().strip("\"“”").strip()
    added = sentence[len(opener):] if opener and sentence.startswith(opener) else sentence
    if len(re.findall(r"[A-Za-z]{2,}", added)) < 2 or len(sentence) > 400:
        return None
    return sentence


def _sides_messages(c: _Candidate) -> dict[str, Any]:
    user = {"role": "user", "content": c.request}
    out: dict[str, Any] = {}
    for prefix, span in (("pos", c.pos_span), ("neg", c.neg_span)):
        scratch = f"{c.scratchpad} {span}"
        out[f"{prefix}_messages"] = [
            user, {"role": "assistant", "content": assistant_turn(scratch, c.output)}]
        out[f"{prefix}_loci"] = [scratch]
        out[f"{prefix}_span"] = span
        out[f"{prefix}_chars"] = len(assistant_turn(scratch, c.output))
    return out


def _candidate_row(c: _Candidate, concept: str, split: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "pair_id": f"ooc-{concept}-{split}-{c.index:05d}", "concept": concept, "source": "ooc",
        "split": split, "pos_messages": None, "neg_messages": None, "pos_loci": [],
        "neg_loci": [], "pos_span": None, "neg_span": None, "pos_chars": 0, "neg_chars": 0,
    }
    if c.error is None:
        row.update(_sides_messages(c))
    row.update({"topic": c.topic, "candidate": c.index, "request": c.request,
                "output": c.output, "parse_error": c.error,
                "scratchpad_chars": len(c.scratchpad or ""),
                "pos_span_chars": len(c.pos_span or ""), "neg_span_chars": len(c.neg_span or "")})
    return row


def _run(backend: GenerationBackend, requests: list[ChatRequest],
         params: SamplingParams) -> list[Completion]:
    if not requests:
        return []
    outs = backend.generate(requests, params)
    if len(outs) != len(requests):
        raise RuntimeError(f"backend {backend.name} returned {len(outs)} completions for "
                           f"{len(requests)} requests")
    return outs


def _write_candidates(backend: GenerationBackend, materials: OOCMaterials, cands: list[_Candidate],
                      *, concept: str, split: str, temperature: float, top_p: float,
                      max_tokens: Mapping[str, int], seed: int) -> None:
    """The four batched steps (request, reasoning, output, sentences) for one round."""
    m = materials

    def params(kind: str, stop: tuple[str, ...]) -> SamplingParams:
        return SamplingParams(temperature, top_p, int(max_tokens[kind]), stop)

    def req(c: _Candidate, step: str, messages: list[dict[str, str]]) -> ChatRequest:
        return ChatRequest(f"ooc-{concept}-{split}-{c.index}-{step}", tuple(messages),
                           _seed(seed, concept, split, c.index, step))

    def prefilled(messages: list[dict[str, str]], prefill: str) -> list[dict[str, str]]:
        return messages + ([{"role": "assistant", "content": prefill}] if prefill else [])

    # 1. the request
    live = list(cands)
    outs = _run(backend, [req(c, "request", prefilled(
        [{"role": "user", "content": m.request_user.format(topic=c.topic)}],
        m.request_prefill)) for c in live], params("request", ("\n\n",)))
    for c, o in zip(live, outs, strict=True):
        c.request = _clean_request(m.request_prefill + o.text)
        if c.request is None:
            c.error = "no request"

    def reply(c: _Candidate) -> list[dict[str, str]]:
        return [{"role": "system", "content": m.reply_system},
                {"role": "user", "content": c.request}]

    # 2. the reasoning
    live = [c for c in cands if c.error is None]
    lead = SCRATCH_OPEN + ("\n" + m.reasoning_lead if m.reasoning_lead else "")
    outs = _run(backend, [req(c, "reasoning", prefilled(reply(c), lead)) for c in live],
                params("reasoning", (SCRATCH_CLOSE,)))
    for c, o in zip(live, outs, strict=True):
        c.scratchpad = _cut_block(m.reasoning_lead + o.text, o.finish_reason == "length", 4)
        if c.scratchpad is None:
            c.error = "no scratchpad"

    # 3. the output: the request answered as a plain chat turn ("answer"), or the reasoning
    # replayed, closed and <OUTPUT> opened ("continue"). Under causal attention the output,
    # which follows the scratchpad, cannot change the scratchpad's activations; "answer" is
    # the robust choice for a small model that loses the format.
    live = [c for c in cands if c.error is None]

    def output_messages(c: _Candidate) -> list[dict[str, str]]:
        if m.output_mode == "answer":
            return prefilled([{"role": "user", "content": c.request}], m.output_lead)
        return prefilled(reply(c), f"{SCRATCH_OPEN}\n{c.scratchpad}\n{SCRATCH_CLOSE}\n\n"
                                   f"{OUTPUT_OPEN}\n{m.output_lead}")

    outs = _run(backend, [req(c, "output", output_messages(c)) for c in live],
                params("output", (OUTPUT_CLOSE,)))
    for c, o in zip(live, outs, strict=True):
        c.output = _cut_block(m.output_lead + o.text, o.finish_reason == "length", 3)
        if c.output is None:
            c.error = "no output"

    # 4. the two sentences
    live = [c for c in cands if c.error is None]
    requests = []
    for c in live:
        for side, opener in (("positive", c.pos_opener), ("negative", c.neg_opener)):
            style = m.style(concept, split, side)
            user = m.sentence_user.format(request=c.request, scratchpad=c.scratchpad,
                                          instruction=style.instruction)
            requests.append(req(c, side, prefilled([{"role": "user", "content": user}],
                                                   opener)))
    outs = _run(backend, requests, params("sentence", ("\n",)))
    for k, c in enumerate(live):
        c.pos_span = _clean_sentence(c.pos_opener, outs[2 * k])
        c.neg_span = _clean_sentence(c.neg_opener, outs[2 * k + 1])
        if c.pos_span is None:
            c.error = "empty positive sentence"
        elif c.neg_span is None:
            c.error = "empty negative sentence"


def _max_tokens(max_tokens: Mapping[str, int] | None) -> dict[str, int]:
    mt = dict(max_tokens or {})
    dialogue, sentence = int(mt.get("dialogue", 96)), int(mt.get("sentence", 40))
    return {"request": int(mt.get("request", sentence)),
            "reasoning": int(mt.get("reasoning", dialogue)),
            "output": int(mt.get("output", dialogue)),
            "sentence": sentence}


def _make_candidate(index: int, materials: OOCMaterials, concept: str, split: str,
                    seed: int) -> _Candidate:
    rng = np.random.default_rng(_seed(seed, concept, split, index, "choices"))
    topic = materials.topics[int(rng.integers(len(materials.topics)))]
    openers = []
    for side in SIDES:
        options = materials.style(concept, split, side).openers
        openers.append(options[int(rng.integers(len(options)))] if options else "")
    return _Candidate(index, topic, openers[0], openers[1])


def generate_ooc_pairs(
    backend: GenerationBackend,
    materials: OOCMaterials,
    *,
    concept: str,
    split: str,
    n_pairs: int,
    candidates_per_round: int = 16,
    max_rounds: int = 4,
    max_length_ratio: float = 1.5,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: Mapping[str, int] | None = None,
    seed: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rounds of ``candidates_per_round`` model-written candidates, filtered, until
    ``n_pairs`` are kept or ``max_rounds`` have run.

    ``max_tokens``: ``dialogue`` (reasoning and output steps) and ``sentence`` (request and
    sentence steps), or per step (``request``, ``reasoning``, ``output``, ``sentence``).
    Deterministic: a candidate's topic, openers and request seeds are functions of
    (seed, concept, split, candidate index), so splits differ and reruns reproduce. Returns
    (the first ``n_pairs`` kept pairs in candidate order, the rejection-count table); fewer
    kept than asked is a logged warning, not an error (the caller decides).
    """
    if n_pairs < 1 or candidates_per_round < 1 or max_rounds < 1:
        raise ValueError("n_pairs, candidates_per_round and max_rounds must be >= 1")
    tokens = _max_tokens(max_tokens)
    flt = PairFilter(materials, concept=concept, split=split, max_length_ratio=max_length_ratio)
    kept: list[dict[str, Any]] = []
    for rnd in range(max_rounds):
        start = rnd * candidates_per_round
        cands = [_make_candidate(i, materials, concept, split, seed)
                 for i in range(start, start + candidates_per_round)]
        _write_candidates(backend, materials, cands, concept=concept, split=split,
                          temperature=temperature, top_p=top_p, max_tokens=tokens, seed=seed)
        for c in cands:
            row = _candidate_row(c, concept, split)
            if flt.check(row) is None:
                kept.append(row)
        log.info("OOC %s/%s round %d: %d kept of %d candidates so far", concept, split, rnd + 1,
                 len(kept), flt.seen_total)
        if len(kept) >= n_pairs:
            break
    if len(kept) < n_pairs:
        log.warning("OOC %s/%s: only %d of %d requested pairs kept after %d candidates in %d "
                    "rounds", concept, split, len(kept), n_pairs, flt.seen_total, max_rounds)
    table = flt.table(limit_dropped=max(0, len(kept) - n_pairs))
    frame = pl.DataFrame(kept[:n_pairs], schema=CANDIDATE_SCHEMA)
    if frame.is_empty():
        return frame.select(*PAIR_COLUMNS, "topic", "candidate"), table
    return frame.drop("parse_error"), table
