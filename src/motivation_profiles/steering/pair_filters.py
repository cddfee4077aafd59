"""The filters every contrastive pair passes, generated or read from a file."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from motivation_profiles.steering.materials import OOCMaterials, variant_of
from motivation_profiles.steering.names import CONCEPTS
from motivation_profiles.steering.pair_format import (
    OUTPUT_OPEN,
    REJECTION_SCHEMA,
    SCRATCH_CLOSE,
    SIDES,
    _loci,
    _missing,
    _sides,
    found_terms,
)

_TAG = re.compile(r"</?[A-Za-z_]+/?>|<|>")


_LABEL_PREFIX = re.compile(r"^\s*(?:question|q|user|request|a|answer)\s*:\s*", re.I)


# ============================================================================ text helpers






def _phrase_hits(text: str, phrases: Sequence[str]) -> list[str]:
    """Whole-word phrase matches (label phrases: ``concept`` must not match ``conceptual``
    only because it starts a word, so inflections are limited to a plural ``s``)."""
    hits = []
    for ph in phrases:
        body = r"\s+".join(re.escape(w) for w in ph.split())
        lead = r"\b" if re.match(r"\w", ph) else ""
        tail = r"s?\b" if re.search(r"\w$", ph) else ""
        if re.search(lead + body + tail, text, re.I):
            hits.append(ph)
    return hits


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass
class FilterContext:
    """What the filters need besides the pair: materials, split, bound, and kept keys."""

    materials: OOCMaterials
    concept: str
    split: str
    max_length_ratio: float
    seen: set[tuple[str, str]] = field(default_factory=set)


def filter_parse(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """The model's text gave every piece (request, reasoning, output, both sentences) and
    both sides are well-formed chat transcripts with a span and loci found in them."""
    err = pair.get("parse_error")
    if isinstance(err, str) and err:
        return err
    pos, neg = _sides(pair)
    for name, side, span, loci in (("positive", pos, pair.get("pos_span"), pair.get("pos_loci")),
                                   ("negative", neg, pair.get("neg_span"), pair.get("neg_loci"))):
        if not side.ok:
            return f"{name} side: {side.error}"
        if _missing(span) or not isinstance(span, str) or not span.strip():
            return f"empty {name} sentence"
        entries = _loci(loci)
        if not entries or not all(isinstance(x, str) and x.strip() for x in entries):
            return f"{name} side: no scratchpad locus"
        if any(x not in side.assistant for x in entries):
            return f"{name} side: a locus is not in the assistant text"
    return None


def filter_matching_task(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """The user request (every non-assistant message) is the same on both sides."""
    pos, neg = _sides(pair)
    if pos.context != neg.context:
        return "user messages differ between the sides"
    return None


def filter_matching_output(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """The final ``<OUTPUT>`` blocks are the same on both sides."""
    pos, neg = _sides(pair)
    if [_norm(o) for o in pos.outputs] != [_norm(o) for o in neg.outputs]:
        return "OUTPUT blocks differ between the sides"
    return None


def filter_one_block_each(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """Exactly one scratchpad block and one output block per side, the scratchpad first."""
    for name, s in zip(SIDES, _sides(pair), strict=True):
        counts = (s.n_scratch_open, s.n_scratch_close, s.n_output_open, s.n_output_close)
        if counts != (1, 1, 1, 1) or len(s.scratchpads) != 1 or len(s.outputs) != 1:
            return (f"{name} side has {s.n_scratch_open}/{s.n_scratch_close} scratchpad and "
                    f"{s.n_output_open}/{s.n_output_close} output tags (open/close)")
        if s.assistant.find(SCRATCH_CLOSE) > s.assistant.find(OUTPUT_OPEN):
            return f"{name} side: the output block opens inside or before the scratchpad"
    return None


def filter_span_verbatim(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """Each side's span occurs verbatim in its scratchpad and in one of its loci."""
    for name, s, span, loci in zip(SIDES, _sides(pair), (pair["pos_span"], pair["neg_span"]),
                                   (pair["pos_loci"], pair["neg_loci"]), strict=True):
        if not any(span in block for block in s.scratchpads):
            return f"{name} span is not in its scratchpad"
        if not any(span in locus for locus in _loci(loci)):
            return f"{name} span is not in its loci"
    return None


def filter_label_leakage(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """No concept-label phrase anywhere in either side."""
    for name, s in zip(SIDES, _sides(pair), strict=True):
        hits = _phrase_hits("\n".join(s.texts), ctx.materials.label_phrases)
        if hits:
            return f"{name} side names a label: {hits[0]!r}"
    return None


def filter_banned_terms(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """No alignment-faking or tier term anywhere in either side."""
    for name, s in zip(SIDES, _sides(pair), strict=True):
        hits = found_terms("\n".join(s.texts), ctx.materials.banned_terms)
        if hits:
            return f"{name} side contains banned term {hits[0]!r}"
    return None


def filter_length_ratio(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """Longer / shorter assistant text (characters) within ``max_length_ratio``."""
    a, b = (len(s.assistant) for s in _sides(pair))
    ratio = max(a, b) / max(min(a, b), 1)
    if ratio > ctx.max_length_ratio:
        return f"length ratio {ratio:.2f} > {ctx.max_length_ratio}"
    return None


def filter_keyword_audit(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """keyword_hard only: the positive span has no controlled keyword, the negative has one."""
    if ctx.split != "keyword_hard":
        return None
    words = ctx.materials.keywords[ctx.concept]
    hits = found_terms(pair["pos_span"], words)
    if hits:
        return f"positive span uses controlled keyword {hits[0]!r}"
    if not found_terms(pair["neg_span"], words):
        return "negative span has no controlled keyword"
    return None


def _duplicate_key(pair: Mapping[str, Any]) -> tuple[str, str]:
    pos, _ = _sides(pair)
    request = "\n".join(c for role, c in pos.context if role == "user")
    return _norm(request), _norm("\n".join(pos.outputs))


def filter_duplicate(pair: Mapping[str, Any], ctx: FilterContext) -> str | None:
    """The (user request, output) of a pair already kept."""
    if _duplicate_key(pair) in ctx.seen:
        return "user request and output already kept"
    return None


Filter = Callable[[Mapping[str, Any], FilterContext], "str | None"]


# Fixed order; the first failing filter is the recorded reason. ``duplicate`` runs last so that
# only pairs that passed everything else count as "already kept".
FILTERS: tuple[tuple[str, Filter], ...] = (
    ("parse", filter_parse),
    ("matching_task", filter_matching_task),
    ("matching_output", filter_matching_output),
    ("one_block_each", filter_one_block_each),
    ("span_verbatim", filter_span_verbatim),
    ("label_leakage", filter_label_leakage),
    ("banned_terms", filter_banned_terms),
    ("length_ratio", filter_length_ratio),
    ("keyword_audit", filter_keyword_audit),
    ("duplicate", filter_duplicate),
)


def _filters_for(split: str) -> tuple[tuple[str, Filter], ...]:
    return tuple(f for f in FILTERS if f[0] != "keyword_audit" or split == "keyword_hard")


class PairFilter:
    """Applies ``FILTERS`` in order to pairs, one at a time (state: the kept keys and the
    per-filter counts, so several rounds of candidates share one table)."""

    def __init__(self, materials: OOCMaterials, *, concept: str, split: str,
                 max_length_ratio: float):
        if concept not in CONCEPTS:
            raise ValueError(f"unknown concept {concept!r}; expected one of {CONCEPTS}")
        variant_of(split)
        self.ctx = FilterContext(materials, concept, split, max_length_ratio)
        self.filters = _filters_for(split)
        self.rejected = {name: 0 for name, _ in self.filters}
        self.examples: dict[str, str] = {}
        self.seen_total = 0

    def check(self, pair: Mapping[str, Any]) -> tuple[str, str] | None:
        """(filter name, reason) of the first failing filter, or None (the pair is kept)."""
        self.seen_total += 1
        for name, fn in self.filters:
            reason = fn(pair, self.ctx)
            if reason is not None:
                self.rejected[name] += 1
                self.examples.setdefault(name, reason)
                return name, reason
        self.ctx.seen.add(_duplicate_key(pair))
        return None

    def table(self, *, limit_dropped: int = 0) -> pl.DataFrame:
        """Per filter: rejected count and pairs still kept after it (in order); a final
        ``limit`` row counts kept pairs beyond the number asked for."""
        rows, left = [], self.seen_total
        for name, _ in self.filters:
            left -= self.rejected[name]
            rows.append({"filter": name, "rejected": self.rejected[name], "kept": left,
                         "example": self.examples.get(name, "")})
        rows.append({"filter": "limit", "rejected": limit_dropped, "kept": left - limit_dropped,
                     "example": ""})
        return pl.DataFrame(rows, schema=REJECTION_SCHEMA)


def filter_pairs(pairs: pl.DataFrame, materials: OOCMaterials, *, concept: str, split: str,
                 max_length_ratio: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Filter pairs (generated or read from a file) in row order; returns the kept pairs (same
    columns) and the rejection-count table."""
    flt = PairFilter(materials, concept=concept, split=split, max_length_ratio=max_length_ratio)
    keep = [flt.check(row) is None for row in pairs.iter_rows(named=True)]
    return pairs.filter(pl.Series(keep, dtype=pl.Boolean)), flt.table()
