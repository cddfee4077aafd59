"""Contrastive concept pairs for activation steering (paper Appendix D.1).

Two sources, one output format (the pairs table of the steering spec: ``pair_id``, ``concept``,
``source``, ``split``, ``pos_messages`` / ``neg_messages`` as JSON chat lists, ``pos_loci`` /
``neg_loci`` the scratchpad contents, ``pos_span`` / ``neg_span`` the annotated sentence):

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
import hashlib
import json
import logging
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from .data import PromptSet
from .generation import ChatRequest, Completion, GenerationBackend, SamplingParams
from .steering_names import CONCEPT_DIRECTION, CONCEPTS

log = logging.getLogger(__name__)

SCRATCH_OPEN = "<SCRATCHPAD_REASONING>"
SCRATCH_CLOSE = "</SCRATCHPAD_REASONING>"
OUTPUT_OPEN = "<OUTPUT>"
OUTPUT_CLOSE = "</OUTPUT>"

OOC_SPLITS = ("train", "validation", "keyword_hard")
IC_SPLITS = ("train", "validation")
SIDES = ("positive", "negative")
VARIANTS = ("standard", "keyword_hard")
MATERIAL_FILES = ("ooc_prompts.yaml", "keywords.yaml", "topics.txt", "neutral_texts.txt")

PAIR_COLUMNS = ["pair_id", "concept", "source", "split", "pos_messages", "neg_messages",
                "pos_loci", "neg_loci", "pos_span", "neg_span"]
REJECTION_COLUMNS = ["filter", "rejected", "kept", "example"]
IC_KEY = ["model", "condition", "goal_id", "tier", "seed"]

_SENTENCE_END = re.compile(r"[.!?](?=[\s\"')\]]|$)")
_TAG = re.compile(r"</?[A-Za-z_]+/?>|<|>")
_LABEL_PREFIX = re.compile(r"^\s*(?:question|q|user|request|a|answer)\s*:\s*", re.I)
_FUTURE = re.compile(r"\bfuture\b", re.I)


class MaterialsError(ValueError):
    """A steering materials file is missing or malformed (the message names file and key)."""


class PairFileError(ValueError):
    """An external pairs file does not have the pairs-table format."""


# ============================================================================ materials


@dataclass(frozen=True)
class SideStyle:
    """How one side's sentence is asked for: the instruction and the prefilled openers."""

    instruction: str
    openers: tuple[str, ...]


@dataclass(frozen=True)
class OOCMaterials:
    """Everything OOC generation and filtering read from the materials directory."""

    directory: str
    request_user: str
    request_prefill: str
    reply_system: str
    reasoning_lead: str
    output_lead: str
    output_mode: str        # answer | continue
    sentence_user: str
    styles: Mapping[tuple[str, str, str], SideStyle]   # (concept, variant, side)
    keywords: Mapping[str, tuple[str, ...]]
    label_phrases: tuple[str, ...]
    banned_terms: tuple[str, ...]
    topics: tuple[str, ...]
    neutral_texts: tuple[str, ...]

    def style(self, concept: str, split: str, side: str) -> SideStyle:
        return self.styles[(concept, variant_of(split), side)]


def variant_of(split: str) -> str:
    if split not in OOC_SPLITS:
        raise ValueError(f"unknown OOC split {split!r}; expected one of {OOC_SPLITS}")
    return "keyword_hard" if split == "keyword_hard" else "standard"


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


def _get(d: Any, key: str, source: str, kind: type = str, *, required: bool = True,
         fields: set[str] | None = None) -> Any:
    """``d[key]`` (a dotted path) checked for type and template fields."""
    cur = d
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            if not required:
                return kind()
            raise MaterialsError(f"{source}: key '{key}' is missing")
        cur = cur[part]
    if cur is None and not required:
        return kind()
    if kind is str:
        if not isinstance(cur, str):
            raise MaterialsError(f"{source}: key '{key}' must be a string")
        if fields is not None:
            try:
                found = _fields(cur)
            except ValueError as exc:
                raise MaterialsError(f"{source}: key '{key}': bad template ({exc}); write "
                                     "literal braces as '{{' and '}}'") from exc
            if found != fields:
                raise MaterialsError(f"{source}: key '{key}' must use exactly the fields "
                                     f"{sorted(fields)}, found {sorted(found)}")
    elif kind is list:
        if not isinstance(cur, list) or not all(isinstance(x, str) and x.strip() for x in cur):
            raise MaterialsError(f"{source}: key '{key}' must be a list of non-empty strings")
    return cur


def _yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise MaterialsError(f"steering materials file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MaterialsError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping):
        raise MaterialsError(f"{path}: expected a YAML mapping at the top level")
    return data


def _lines(path: Path, minimum: int) -> tuple[str, ...]:
    if not path.is_file():
        raise MaterialsError(f"steering materials file {path} does not exist")
    lines = tuple(dict.fromkeys(s.strip() for s in path.read_text().splitlines() if s.strip()
                                and not s.lstrip().startswith("#")))
    if len(lines) < minimum:
        raise MaterialsError(f"{path}: {len(lines)} non-empty lines, need at least {minimum}")
    return lines


def load_materials(directory: str | Path) -> OOCMaterials:
    """Read and check ``ooc_prompts.yaml``, ``keywords.yaml``, ``topics.txt`` and
    ``neutral_texts.txt`` from ``directory``."""
    d = Path(directory)
    src = str(d / "ooc_prompts.yaml")
    p = _yaml(d / "ooc_prompts.yaml")
    styles: dict[tuple[str, str, str], SideStyle] = {}
    for concept in CONCEPTS:
        for variant in VARIANTS:
            for side in SIDES:
                key = f"concepts.{concept}.{variant}.{side}"
                instruction = _get(p, f"{key}.instruction", src).strip()
                if not instruction:
                    raise MaterialsError(f"{src}: key '{key}.instruction' is empty")
                openers = tuple(o.strip() for o in _get(p, f"{key}.openers", src, list,
                                                        required=False))
                styles[(concept, variant, side)] = SideStyle(instruction, openers)
    ksrc = str(d / "keywords.yaml")
    k = _yaml(d / "keywords.yaml")
    keywords = {c: tuple(_get(k, f"controlled_keywords.{c}", ksrc, list)) for c in CONCEPTS}
    for c, words in keywords.items():
        if not words:
            raise MaterialsError(f"{ksrc}: key 'controlled_keywords.{c}' is empty")
    materials = OOCMaterials(
        directory=str(d),
        request_user=_get(p, "request.user", src, fields={"topic"}),
        request_prefill=_get(p, "request.prefill", src, required=False),
        reply_system=_get(p, "reply.system", src, fields=set()),
        reasoning_lead=_get(p, "reply.reasoning_lead", src, required=False),
        output_lead=_get(p, "reply.output_lead", src, required=False),
        output_mode=_get(p, "reply.output_mode", src, required=False) or "answer",
        sentence_user=_get(p, "sentence.user", src,
                           fields={"request", "scratchpad", "instruction"}),
        styles=styles,
        keywords=keywords,
        label_phrases=tuple(_get(k, "label_phrases", ksrc, list)),
        banned_terms=tuple(_get(k, "banned_terms", ksrc, list)),
        topics=_lines(d / "topics.txt", 1),
        neutral_texts=_lines(d / "neutral_texts.txt", 1),
    )
    if materials.output_mode not in ("answer", "continue"):
        raise MaterialsError(f"{src}: key 'reply.output_mode' must be 'answer' or 'continue', "
                             f"got {materials.output_mode!r}")
    for concept in CONCEPTS:
        words = keywords[concept]
        for opener in styles[(concept, "keyword_hard", "positive")].openers:
            if found_terms(opener, words):
                raise MaterialsError(
                    f"{src}: key 'concepts.{concept}.keyword_hard.positive.openers': "
                    f"{opener!r} contains controlled keywords {found_terms(opener, words)}")
    return materials


# ============================================================================ text helpers


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


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


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


@functools.lru_cache(maxsize=8192)
def _parse_side(messages_json: str) -> _Side:
    try:
        msgs = json.loads(messages_json)
    except (TypeError, ValueError) as exc:
        return _Side(False, f"messages are not JSON ({exc})")
    if not isinstance(msgs, list) or not all(
            isinstance(m, Mapping) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str) for m in msgs):
        return _Side(False, "messages are not a list of {role, content} strings")
    context = tuple((m["role"], m["content"]) for m in msgs if m["role"] != "assistant")
    if not any(role == "user" and c.strip() for role, c in context):
        return _Side(False, "no user request")
    turns = [m["content"] for m in msgs if m["role"] == "assistant"]
    if not any(t.strip() for t in turns):
        return _Side(False, "no assistant message")
    text = "\n".join(turns)
    return _Side(
        True, None, context, text, tuple(m["content"] for m in msgs),
        text.count(SCRATCH_OPEN), text.count(SCRATCH_CLOSE),
        text.count(OUTPUT_OPEN), text.count(OUTPUT_CLOSE),
        tuple(_closed_blocks(text, SCRATCH_OPEN, SCRATCH_CLOSE)),
        tuple(_closed_blocks(text, OUTPUT_OPEN, OUTPUT_CLOSE)),
    )


def _messages_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(_plain(value), ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _sides(pair: Mapping[str, Any]) -> tuple[_Side, _Side]:
    return (_parse_side(_messages_json(pair["pos_messages"])),
            _parse_side(_messages_json(pair["neg_messages"])))


def _loci(value: Any) -> list[Any]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value) if not isinstance(value, str) else [value]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


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

    def table(self, *, limit_dropped: int = 0) -> pd.DataFrame:
        """Per filter: rejected count and pairs still kept after it (in order); a final
        ``limit`` row counts kept pairs beyond the number asked for."""
        rows, left = [], self.seen_total
        for name, _ in self.filters:
            left -= self.rejected[name]
            rows.append({"filter": name, "rejected": self.rejected[name], "kept": left,
                         "example": self.examples.get(name, "")})
        rows.append({"filter": "limit", "rejected": limit_dropped, "kept": left - limit_dropped,
                     "example": ""})
        return pd.DataFrame(rows, columns=REJECTION_COLUMNS).astype(
            {"rejected": "int64", "kept": "int64"})


def filter_pairs(pairs: pd.DataFrame, materials: OOCMaterials, *, concept: str, split: str,
                 max_length_ratio: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Filter pairs (generated or read from a file) in row order; returns the kept pairs and
    the rejection-count table."""
    flt = PairFilter(materials, concept=concept, split=split, max_length_ratio=max_length_ratio)
    keep = [flt.check(row) is None for row in pairs.to_dict("records")]
    return pairs[np.asarray(keep, dtype=bool)].reset_index(drop=True), flt.table()


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
        out[f"{prefix}_messages"] = json.dumps(
            [user, {"role": "assistant", "content": assistant_turn(scratch, c.output)}],
            ensure_ascii=False)
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
) -> tuple[pd.DataFrame, pd.DataFrame]:
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
    frame = pd.DataFrame(kept[:n_pairs])
    if frame.empty:
        frame = pd.DataFrame(columns=[*PAIR_COLUMNS, "topic", "candidate"])
    return frame.drop(columns=["parse_error"], errors="ignore"), table


# ============================================================================ external files


def read_pair_file(path: str | Path, *, concept: str, source: str,
                   split: str | None) -> pd.DataFrame:
    """A user-supplied pairs file (.parquet, .jsonl or .json records) in the pairs-table format.

    Messages may be JSON strings or lists of {role, content}; loci a list or one string.
    Missing ``concept`` / ``source`` / ``split`` / ``pair_id`` columns are filled in (``split``
    from the argument, or ``train`` for IC files without one); present ones must agree.
    """
    p = Path(path)
    if not p.is_file():
        raise PairFileError(f"pairs file {p} does not exist")
    try:
        if p.suffix == ".parquet":
            df = pd.read_parquet(p)
        elif p.suffix == ".jsonl":
            df = pd.read_json(p, lines=True, dtype=False)
        elif p.suffix == ".json":
            df = pd.DataFrame(json.loads(p.read_text()))
        else:
            raise PairFileError(f"{p}: unknown pairs file type (use .parquet, .jsonl, .json)")
    except (ValueError, OSError) as exc:
        if isinstance(exc, PairFileError):
            raise
        raise PairFileError(f"{p}: cannot be read ({exc})") from exc
    need = ["pos_messages", "neg_messages", "pos_loci", "neg_loci"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise PairFileError(f"{p}: missing column(s) {missing}; a pairs file needs "
                            f"{PAIR_COLUMNS}")
    df = df.copy()
    for col, value in (("concept", concept), ("source", source)):
        if col in df.columns and set(df[col].astype(str)) - {value}:
            raise PairFileError(f"{p}: column {col!r} has {sorted(set(df[col]))}, expected "
                                f"{value!r}")
        df[col] = value
    if split is not None:
        if "split" in df.columns and set(df["split"].astype(str)) - {split}:
            raise PairFileError(f"{p}: column 'split' has {sorted(set(df['split']))}, "
                                f"expected {split!r}")
        df["split"] = split
    elif "split" not in df.columns:
        log.info("%s: no split column; every pair is a training pair", p)
        df["split"] = "train"
    allowed = OOC_SPLITS if source == "ooc" else IC_SPLITS
    bad = set(df["split"].astype(str)) - set(allowed)
    if bad:
        raise PairFileError(f"{p}: unknown split(s) {sorted(bad)}; expected {allowed}")
    if "pair_id" not in df.columns:
        df["pair_id"] = [f"{p.stem}-{i:05d}" for i in range(len(df))]
    df["pair_id"] = df["pair_id"].astype(str)
    if df["pair_id"].duplicated().any():
        raise PairFileError(f"{p}: pair_id values are not unique")
    for side in ("pos", "neg"):
        df[f"{side}_messages"] = [_messages_json(v) for v in df[f"{side}_messages"]]
        df[f"{side}_loci"] = [[str(x) for x in _loci(v)] for v in df[f"{side}_loci"]]
        span = f"{side}_span"
        df[span] = ([None if _missing(v) else str(v) for v in df[span]] if span in df.columns
                    else None)
    return df[PAIR_COLUMNS + [c for c in df.columns if c not in PAIR_COLUMNS]]


# ============================================================================ IC pairs


def ic_messages(prompts: PromptSet, goal: str, tier: str,
                turns: Sequence[str]) -> list[dict[str, str]]:
    """The rollout's conversation: system + user turn, then the assistant turns with the
    continuation user turn between them."""
    msgs = prompts.messages(goal, tier)
    for turn in turns[:-1]:
        msgs = prompts.continue_messages(msgs, turn)
    if turns:
        msgs.append({"role": "assistant", "content": turns[-1]})
    return msgs


def ic_loci(turns: Sequence[str]) -> list[str]:
    """Every non-empty scratchpad block of every assistant turn, in order."""
    return [block for turn in turns for block in scratchpad_blocks(turn)]


def _usable_ic(rollouts: pd.DataFrame, judge: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    for name, df, cols in (("rollouts", rollouts, [*IC_KEY, "goal", "turns", "scratchpad"]),
                           ("judge", judge, [*IC_KEY, "a_score", "b_score"])):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"IC pairs: the {name} table lacks column(s) {missing}")
    if judge.duplicated(IC_KEY).any():
        raise ValueError("IC pairs: the judge table has several rows for one rollout "
                         f"({IC_KEY})")
    r = rollouts.reset_index(drop=True).assign(_order=lambda d: np.arange(len(d)))
    j = judge[[*IC_KEY, "a_score", "b_score"]]
    joined = r.merge(j, on=IC_KEY, how="inner", validate="many_to_one").sort_values("_order")
    joined["_turns"] = [[str(t) for t in _loci(v)] for v in joined["turns"]]
    joined["_loci"] = [ic_loci(t) for t in joined["_turns"]]
    has_scratch = (joined["scratchpad"].map(lambda s: isinstance(s, str) and bool(s.strip()))
                   & joined["_loci"].map(bool))
    scored = joined["a_score"].notna() & joined["b_score"].notna()
    usable = joined[has_scratch & scored].reset_index(drop=True)
    return usable, len(joined)


def ic_pairs(
    rollouts: pd.DataFrame,
    judge: pd.DataFrame,
    prompts: PromptSet,
    *,
    concept: str,
    high: float,
    low: float,
    max_length_ratio: float,
    n_train: int,
    n_validation: int,
    selection: str = "first",
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairs of judged AF rollouts for one concept (Appendix D.1, IC sets).

    Positives / negatives by the judge's mean scores a (researcher expectations) and b
    (retraining consequences): expectations: positive a >= high and b <= low, negative a <= low
    and b <= low; consequences: positive b >= high, negative b <= low, with a matched where
    possible. Each positive, in rollout order, takes an unused negative of the same model,
    goal and tier from a different run (condition or seed) among those whose scratchpad-length
    ratio is within ``max_length_ratio``: the nearest a score first (consequences), then the
    nearest length, then file order. ``selection``: ``first`` keeps the first
    ``n_train + n_validation`` pairs formed (the paper's file order), ``sample`` a seeded
    random subset in random order; the first ``n_train`` are ``train``, the rest
    ``validation``. Messages use ``prompts`` (the base system prompt) for every run.
    """
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; expected one of {CONCEPTS}")
    if selection not in ("first", "sample"):
        raise ValueError(f"selection must be 'first' or 'sample', got {selection!r}")
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    usable, n_joined = _usable_ic(rollouts, judge)
    a, b = usable["a_score"].astype(float), usable["b_score"].astype(float)
    if CONCEPT_DIRECTION[concept] == "a":
        pos_mask, neg_mask = (a >= high) & (b <= low), (a <= low) & (b <= low)
    else:
        pos_mask, neg_mask = b >= high, b <= low
    chars = usable["scratchpad"].str.len().to_numpy()
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in np.flatnonzero(neg_mask.to_numpy()):
        row = usable.iloc[i]
        groups.setdefault((row["model"], row["goal_id"], row["tier"]), []).append(int(i))
    used: set[int] = set()
    formed: list[tuple[int, int]] = []
    no_negative = rejected_length = 0
    for i in np.flatnonzero(pos_mask.to_numpy()):
        row = usable.iloc[i]
        run = (row["condition"], row["seed"])
        options = [j for j in groups.get((row["model"], row["goal_id"], row["tier"]), [])
                   if j not in used and j != i
                   and (usable.at[j, "condition"], usable.at[j, "seed"]) != run]
        if not options:
            no_negative += 1
            continue
        within = [j for j in options
                  if max(chars[i], chars[j]) / max(min(chars[i], chars[j]), 1)
                  <= max_length_ratio]
        if not within:
            rejected_length += 1
            continue

        def rank(j: int, i: int = int(i)) -> tuple[float, int, int]:
            da = abs(a.iat[j] - a.iat[i]) if CONCEPT_DIRECTION[concept] == "b" else 0.0
            return (da, abs(int(chars[j]) - int(chars[i])), j)

        j = min(within, key=rank)
        used.update((int(i), j))
        formed.append((int(i), j))
    order = list(range(len(formed)))
    if selection == "sample":
        order = list(np.random.default_rng(seed).permutation(len(formed)))
    chosen = [formed[k] for k in order[: n_train + n_validation]]
    if len(chosen) < n_train + n_validation:
        log.warning("IC %s: %d pairs formed, fewer than n_train + n_validation = %d", concept,
                    len(formed), n_train + n_validation)
    rows = []
    for k, (i, j) in enumerate(chosen):
        pos, neg = usable.iloc[i], usable.iloc[j]
        row: dict[str, Any] = {
            "pair_id": f"ic-{concept}-{k:05d}", "concept": concept, "source": "ic",
            "split": "train" if k < n_train else "validation",
        }
        for prefix, r in (("pos", pos), ("neg", neg)):
            row[f"{prefix}_messages"] = json.dumps(
                ic_messages(prompts, str(r["goal"]), str(r["tier"]), r["_turns"]),
                ensure_ascii=False)
            row[f"{prefix}_loci"] = list(r["_loci"])
            row[f"{prefix}_span"] = None
        row.update({"model": pos["model"], "goal_id": pos["goal_id"], "tier": pos["tier"]})
        for prefix, r in (("pos", pos), ("neg", neg)):
            row.update({f"{prefix}_condition": r["condition"], f"{prefix}_seed": r["seed"],
                        f"{prefix}_a": float(r["a_score"]), f"{prefix}_b": float(r["b_score"]),
                        f"{prefix}_chars": len(r["scratchpad"]),
                        f"{prefix}_future": future_count(r["scratchpad"])})
        rows.append(row)
    pairs = pd.DataFrame(rows)
    if pairs.empty:
        pairs = pd.DataFrame(columns=PAIR_COLUMNS)
    n_tr = int((pairs["split"] == "train").sum()) if len(pairs) else 0

    def mean(col: str) -> float:
        return float(pairs[col].mean()) if len(pairs) else float("nan")

    report = pd.DataFrame([
        ("rollouts", len(rollouts)), ("rollouts_judged", n_joined),
        ("rollouts_usable", len(usable)), ("positives", int(pos_mask.sum())),
        ("negatives_eligible", int(neg_mask.sum())),
        ("positives_without_negative", no_negative), ("rejected_length", rejected_length),
        ("pairs_formed", len(formed)), ("pairs_selected", len(pairs)), ("train", n_tr),
        ("validation", len(pairs) - n_tr), ("mean_pos_future", mean("pos_future")),
        ("mean_neg_future", mean("neg_future")),
    ], columns=["metric", "value"]).astype({"value": "float64"})
    return pairs, report


__all__ = [
    "FILTERS", "IC_SPLITS", "MATERIAL_FILES", "OOC_SPLITS", "PAIR_COLUMNS", "REJECTION_COLUMNS",
    "FilterContext", "MaterialsError", "OOCMaterials", "PairFileError", "PairFilter",
    "SideStyle", "assistant_turn", "filter_pairs", "found_terms", "future_count",
    "generate_ooc_pairs", "ic_loci", "ic_messages", "ic_pairs", "load_materials",
    "read_pair_file", "scratchpad_blocks", "variant_of",
    "filter_parse", "filter_matching_task", "filter_matching_output", "filter_one_block_each",
    "filter_span_verbatim", "filter_label_leakage", "filter_banned_terms", "filter_length_ratio",
    "filter_keyword_audit", "filter_duplicate",
]
