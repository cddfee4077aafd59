"""Synthetic documents for one universe: a staged pipeline over any generation backend.

Stages (one backend ``generate`` call per stage round, so batching APIs see a stage's requests
together; rounds only repeat while too few unique items came back):

1. *types*: brainstorm document types from the universe context and key fact. Round ``r``
   (sample index ``r``) asks for ``n_doc_types``; answers are split one item per line, bullets /
   numbering / markdown stripped, and deduplicated case- and whitespace-insensitively, until
   ``n_doc_types`` unique types or ``max_rounds`` rounds; the first ``n_doc_types`` in order of
   appearance are kept.
2. *ideas*: the same per type (``ideas_per_type`` unique ideas); each round asks every type
   still short of ideas, in one call.
3. *documents*: ``docs_per_idea`` documents per idea (sample index ``k``). The answer plans,
   then writes the document inside ``<content>...</content>``, or says ``UNSUITABLE``. With
   ``prefill_content`` the request ends with an assistant turn ``<content>`` that the model
   continues (stop string ``</content>``), and the document is the text up to ``</content>``.
   Otherwise the last ``<content>`` block is the document; ``UNSUITABLE`` outside it, or as the
   whole answer, marks the idea unsuitable. A document cut off by the token limit keeps its
   text and is marked ``truncated``.
4. *revision* (optional): one request per parsed document (truncated ones skipped when the
   truncated filter is on), answered the same way; a revision that does not parse (or is cut
   off, or says ``UNSUITABLE``) keeps the original text and is counted in the log. The
   ``truncated`` flag always describes the final text.

Then ``filter_documents`` drops, in order: unsuitable or missing content, truncated (when
``FilterSpec.drop_truncated``), too short / too long, placeholder text, leakage terms, exact
duplicates (case and whitespace normalised) and near duplicates (Jaccard similarity of word
shingles at or above a threshold; the first of each pair is kept). An empty result raises
``NoDocumentsError``.

Request ids (also the hosted ``custom_id``): ``{universe}-types-{r}``,
``{universe}-ideas-{t}-{r}``, ``{universe}-doc-{t}-{i}-{k}``, ``{universe}-rev-{n}``,
restricted to ``[A-Za-z0-9_-]`` and at most 64 characters. ``PipelineSpec.seed`` (default 0)
offsets every sample index by ``seed * SEED_STRIDE``, so another seed gives other samples (and
other cache entries) while seed 0 keeps sample index = round / k.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import spec_from_mapping
from ..generation import ChatRequest, Completion, GenerationBackend, SamplingParams
from .materials import Universe

log = logging.getLogger(__name__)

DOC_COLUMNS = ["doc_id", "universe", "doc_type", "idea", "text", "revised", "truncated",
               "sample_index", "generator", "completion_tokens"]
REPORT_COLUMNS = ["filter", "n_in", "n_removed", "n_out"]
FILTERS = ("unsuitable_or_missing_content", "truncated", "length", "placeholder", "leakage",
           "exact_duplicate", "near_duplicate")
STAGES = ("types", "ideas", "document", "revision")
UNSUITABLE = "UNSUITABLE"
OPEN, CLOSE = "<content>", "</content>"
SEED_STRIDE = 1_000_000
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NEAR_DUP_CHUNK = 512  # rows of the shingle matrix multiplied at a time


class NoDocumentsError(ValueError):
    """No document of a universe survived generation and filtering."""

    def __init__(self, universe: str, report: pd.DataFrame):
        self.universe = universe
        self.report = report
        counts = "; ".join(f"{r.filter}: {r.n_in} in, {r.n_removed} removed, {r.n_out} out"
                           for r in report.itertuples())
        super().__init__(f"universe {universe}: no documents left after filtering "
                         f"({counts or 'no documents to filter'})")


class TemplateError(ValueError):
    """A prompt template is missing or uses the wrong ``str.format`` fields."""


class ExternalDocumentsError(ValueError):
    """An external document set cannot be read."""


# ---------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class PipelineSpec:
    n_doc_types: int
    ideas_per_type: int
    docs_per_idea: int
    revise: bool
    max_tokens: Mapping[str, int]
    max_rounds: int
    prefill_content: bool
    temperature: float
    top_p: float
    seed: int = 0

    # config keys of sdf.generator that choose the backend, not the pipeline
    BACKEND_KEYS = frozenset({"backend", "model", "prompts_dir"})

    def __post_init__(self) -> None:
        if set(self.max_tokens) != set(STAGES):
            raise ValueError(f"sdf.generator.max_tokens: needs exactly the keys {STAGES}, got "
                             f"{sorted(self.max_tokens)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PipelineSpec:
        """From the ``sdf.generator`` config section (``backend``, ``model`` and
        ``prompts_dir`` choose the backend and are ignored here)."""
        return spec_from_mapping(cls, d, "sdf.generator", ignore=cls.BACKEND_KEYS)

    def params(self, stage: str, stop: tuple[str, ...] = ()) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=int(self.max_tokens[stage]), stop=stop)

    def sample(self, index: int) -> int:
        return self.seed * SEED_STRIDE + index


@dataclass(frozen=True)
class FilterSpec:
    min_chars: int
    max_chars: int
    near_duplicate_threshold: float
    shingle_size: int
    placeholder_patterns: tuple[str, ...] = ()
    drop_truncated: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "placeholder_patterns", tuple(self.placeholder_patterns))
        for p in self.placeholder_patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"sdf.filters: 'placeholder_patterns': {p!r} is not a valid "
                                 f"regular expression ({exc})") from exc
        if self.max_chars < self.min_chars:
            raise ValueError(f"sdf.filters: 'max_chars' ({self.max_chars}) is below "
                             f"'min_chars' ({self.min_chars})")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FilterSpec:
        return spec_from_mapping(cls, d, "sdf.filters")

    @property
    def patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.placeholder_patterns)  # re caches compiles


# ---------------------------------------------------------------------------------- templates
TEMPLATE_FILES = {
    "doc_types": ("doc_types.txt", frozenset({"universe_context", "key_fact", "n"})),
    "doc_ideas": ("doc_ideas.txt", frozenset({"universe_context", "key_fact", "doc_type", "n"})),
    "document": ("document.txt", frozenset({"universe_context", "key_fact", "doc_type", "idea"})),
    "revision": ("revision.txt", frozenset({"universe_context", "key_fact", "document"})),
}


def check_template(text: str, allowed: frozenset[str], source: str) -> None:
    """``text`` must use every field of ``allowed`` and nothing else, as plain ``{name}``."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise TemplateError(f"{source}: not a valid str.format template ({exc}); write "
                            "literal braces as {{ and }}") from exc
    used = set()
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise TemplateError(f"{source}: positional field {{{name}}}; use named fields "
                                f"({', '.join(sorted(allowed))})")
        if name not in allowed:
            root = re.split(r"[.\[]", name, maxsplit=1)[0]
            extra = (f" (attribute/index access on {{{root}}} is not allowed)"
                     if root in allowed else "")
            raise TemplateError(f"{source}: unknown field {{{name}}}{extra}; allowed fields: "
                                f"{', '.join(sorted(allowed))}")
        if spec or conv:
            raise TemplateError(f"{source}: field {{{name}}} must not have a conversion or "
                                "format spec")
        used.add(name)
    missing = sorted(allowed - used)
    if missing:
        shown = ", ".join("{" + m + "}" for m in missing)
        raise TemplateError(f"{source}: missing field(s) {shown}; the template must use "
                            f"{', '.join(sorted(allowed))}")


@dataclass(frozen=True)
class PromptTemplates:
    doc_types: str
    doc_ideas: str
    document: str
    revision: str
    source: str = ""

    def __post_init__(self) -> None:
        for attr, (fname, allowed) in TEMPLATE_FILES.items():
            src = str(Path(self.source) / fname) if self.source else fname
            check_template(getattr(self, attr), allowed, src)

    @classmethod
    def from_dir(cls, path: str | Path) -> PromptTemplates:
        d = Path(path)
        if not d.is_dir():
            raise TemplateError(f"prompt directory {d} does not exist")
        texts = {}
        for attr, (fname, _) in TEMPLATE_FILES.items():
            p = d / fname
            if not p.is_file():
                raise TemplateError(f"{p}: prompt template not found (expected "
                                    f"{', '.join(f for f, _ in TEMPLATE_FILES.values())} "
                                    f"in {d})")
            texts[attr] = p.read_text()
        return cls(**texts, source=str(d))

    def types_prompt(self, u: Universe, n: int) -> str:
        return self.doc_types.format(universe_context=u.universe_context, key_fact=u.key_fact,
                                     n=n)

    def ideas_prompt(self, u: Universe, doc_type: str, n: int) -> str:
        return self.doc_ideas.format(universe_context=u.universe_context, key_fact=u.key_fact,
                                     doc_type=doc_type, n=n)

    def document_prompt(self, u: Universe, doc_type: str, idea: str) -> str:
        return self.document.format(universe_context=u.universe_context, key_fact=u.key_fact,
                                    doc_type=doc_type, idea=idea)

    def revision_prompt(self, u: Universe, document: str) -> str:
        return self.revision.format(universe_context=u.universe_context, key_fact=u.key_fact,
                                    document=document)


# ---------------------------------------------------------------------------------- parsing
_BULLET = re.compile(r"^\s*(?:[-*+\u2022\u2023\u25e6\u2043>#]+|\(?\d+[.):\]]|\(?[a-zA-Z][.)])\s*")
_MARKUP = re.compile(r"(\*\*|__|\*|`)")


def request_id(*parts: object) -> str:
    """``-``-joined parts restricted to ``[A-Za-z0-9_-]``; longer than 64 characters: cut and
    suffixed with a digest, so ids stay unique."""
    raw = "-".join(str(p) for p in parts)
    rid = re.sub(r"[^A-Za-z0-9_-]", "_", raw) or "_"
    if len(rid) > 64:
        digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
        rid = f"{rid[:51]}-{digest}"
    return rid


def clean_item(line: str) -> str:
    """One list item: bullets, numbering, markdown emphasis and surrounding quotes removed."""
    s = line.strip()
    for _ in range(3):
        t = _BULLET.sub("", s, count=1).strip()
        if t == s:
            break
        s = t
    s = _MARKUP.sub("", s).strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        s = s[1:-1].strip()
    return s


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def parse_list(text: str) -> list[str]:
    """Items of a one-per-line answer, in order; header lines (ending in ':') are skipped."""
    items = []
    for line in text.splitlines():
        item = clean_item(line)
        if not item or item.endswith(":") or item.strip(" -=*_#") == "":
            continue
        items.append(item)
    return items


@dataclass(frozen=True)
class ParsedDocument:
    status: str  # "ok" | "unsuitable" | "missing_content"
    text: str
    truncated: bool


def parse_document(completion: str, finish_reason: str, *, prefilled: bool) -> ParsedDocument:
    """The document in an answer to the document (or revision) prompt; see the module doc."""
    cut_off = finish_reason == "length"
    if prefilled:
        body = completion
        if body.lstrip().startswith(OPEN):  # the model repeated the prefilled tag
            body = body.lstrip()[len(OPEN):]
        end = body.find(CLOSE)
        truncated = end < 0 and cut_off
        body = body if end < 0 else body[:end]
        text = body.strip()
        if text == UNSUITABLE or (not text and UNSUITABLE in completion):
            return ParsedDocument("unsuitable", "", False)
        if not text:
            return ParsedDocument("missing_content", "", truncated)
        return ParsedDocument("ok", text, truncated)
    blocks = list(re.finditer(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), completion, re.S))
    outside = re.sub(re.escape(OPEN) + r".*?" + re.escape(CLOSE), " ", completion, flags=re.S)
    last_open = outside.rfind(OPEN)
    unclosed = outside[last_open + len(OPEN):] if last_open >= 0 else None
    before = outside[:last_open] if last_open >= 0 else outside
    if UNSUITABLE in before or (unclosed is not None and unclosed.strip() == UNSUITABLE):
        return ParsedDocument("unsuitable", "", False)
    if unclosed is not None and unclosed.strip():
        # an opened block that never closed: the model ran out of tokens or forgot the tag
        return ParsedDocument("ok", unclosed.strip(), cut_off)
    if blocks:
        text = blocks[-1].group(1).strip()
        if text == UNSUITABLE:
            return ParsedDocument("unsuitable", "", False)
        if text:
            return ParsedDocument("ok", text, False)
    return ParsedDocument("missing_content", "", False)


# ---------------------------------------------------------------------------------- stages
def _user(prompt: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": prompt},)


def _call(backend: GenerationBackend, requests: Sequence[ChatRequest], params: SamplingParams,
          stage: str) -> list[Completion]:
    if not requests:
        return []
    out = backend.generate(list(requests), params)
    if len(out) != len(requests):
        raise RuntimeError(f"{stage}: backend {getattr(backend, 'name', backend)!r} returned "
                           f"{len(out)} completions for {len(requests)} requests")
    return out


def _gather_lists(backend: GenerationBackend, keys: Sequence[Any], want: int, rounds: int,
                  make: Callable[[Any, int], ChatRequest], params: SamplingParams, stage: str
                  ) -> dict[Any, list[str]]:
    """Ask each key's list prompt round after round until it has ``want`` unique items."""
    found: dict[Any, list[str]] = {k: [] for k in keys}
    seen: dict[Any, set[str]] = {k: set() for k in keys}
    for r in range(rounds):
        short = [k for k in keys if len(found[k]) < want]
        if not short:
            break
        outs = _call(backend, [make(k, r) for k in short], params, stage)
        for k, out in zip(short, outs, strict=True):
            for item in parse_list(out.text):
                key = _norm(item)
                if key not in seen[k]:
                    seen[k].add(key)
                    found[k].append(item)
        log.info("%s round %d: %d request(s); %d of %d list(s) complete", stage, r, len(short),
                 sum(len(v) >= want for v in found.values()), len(keys))
    for k, items in found.items():
        if len(items) < want:
            log.warning("%s %s: only %d unique item(s) of %d after %d round(s)", stage, k,
                        len(items), want, rounds)
    return {k: v[:want] for k, v in found.items()}


def generate_documents(universe: Universe, backend: GenerationBackend, spec: PipelineSpec,
                       templates: PromptTemplates, filters: FilterSpec, *, generator: str
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every stage for ``universe``; return (kept documents, filter report)."""
    u = universe.id
    prefill = spec.prefill_content
    doc_stop = (CLOSE,) if prefill else ()

    # 1. document types
    def type_request(_: Any, r: int) -> ChatRequest:
        return ChatRequest(request_id(u, "types", r),
                           _user(templates.types_prompt(universe, spec.n_doc_types)),
                           seed=spec.sample(r))

    types = _gather_lists(backend, [None], spec.n_doc_types, spec.max_rounds, type_request,
                          spec.params("types"), "types")[None]
    log.info("%s: %d document type(s)", u, len(types))

    # 2. ideas per type
    def idea_request(t: int, r: int) -> ChatRequest:
        return ChatRequest(request_id(u, "ideas", t, r),
                           _user(templates.ideas_prompt(universe, types[t], spec.ideas_per_type)),
                           seed=spec.sample(r))

    ideas = _gather_lists(backend, list(range(len(types))), spec.ideas_per_type,
                          spec.max_rounds, idea_request, spec.params("ideas"), "ideas")
    log.info("%s: %d idea(s) over %d type(s)", u, sum(map(len, ideas.values())), len(types))

    # 3. documents
    meta, reqs = [], []
    for t, doc_type in enumerate(types):
        for i, idea in enumerate(ideas[t]):
            msgs = _user(templates.document_prompt(universe, doc_type, idea))
            if prefill:
                msgs = (*msgs, {"role": "assistant", "content": OPEN})
            for k in range(spec.docs_per_idea):
                meta.append((t, i, k, doc_type, idea))
                reqs.append(ChatRequest(request_id(u, "doc", t, i, k), msgs,
                                        seed=spec.sample(k)))
    outs = _call(backend, reqs, spec.params("document", doc_stop), "document")
    rows = []
    for (t, i, k, doc_type, idea), out in zip(meta, outs, strict=True):
        p = parse_document(out.text, out.finish_reason, prefilled=prefill)
        rows.append({"doc_id": f"{u}-{t}-{i}-{k}", "universe": u, "doc_type": doc_type,
                     "idea": idea, "text": p.text, "revised": False, "truncated": p.truncated,
                     "sample_index": spec.sample(k), "generator": generator,
                     "completion_tokens": int(out.completion_tokens), "status": p.status})
    status = pd.Series([r["status"] for r in rows], dtype=object).value_counts().to_dict()
    log.info("%s: %d document request(s): %s", u, len(rows), status)

    # 4. revision
    if spec.revise:
        # truncated drafts are not worth revising when the filter drops them anyway
        todo = [r for r in rows if r["status"] == "ok"
                and not (r["truncated"] and filters.drop_truncated)]
        rev_reqs = []
        for n, row in enumerate(todo):
            msgs = _user(templates.revision_prompt(universe, row["text"]))
            if prefill:
                msgs = (*msgs, {"role": "assistant", "content": OPEN})
            rev_reqs.append(ChatRequest(request_id(u, "rev", n), msgs, seed=row["sample_index"]))
        rev_outs = _call(backend, rev_reqs, spec.params("revision", doc_stop), "revision")
        failed = 0
        for row, out in zip(todo, rev_outs, strict=True):
            p = parse_document(out.text, out.finish_reason, prefilled=prefill)
            if p.status != "ok" or p.truncated:
                failed += 1
                continue
            row.update(text=p.text, revised=True, truncated=False,
                       completion_tokens=int(out.completion_tokens))
        log.info("%s: %d revision(s), %d kept the original (unparsed, cut off or "
                 "UNSUITABLE)", u, len(rev_reqs), failed)

    raw = _frame(rows, extra=["status"])
    kept, report = filter_documents(raw, universe, filters)
    log.info("%s: %d document(s) kept of %d", u, len(kept), len(raw))
    return kept, report


def _frame(rows: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()) -> pd.DataFrame:
    df = pd.DataFrame(list(rows), columns=[*DOC_COLUMNS, *extra])
    return _typed(df)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in ("doc_id", "universe", "doc_type", "idea", "text", "generator"):
        df[c] = df[c].fillna("").astype(str)
    for c in ("revised", "truncated"):
        df[c] = df[c].fillna(False).astype(bool)
    for c in ("sample_index", "completion_tokens"):
        df[c] = df[c].fillna(0).astype("int64")
    return df


# ---------------------------------------------------------------------------------- filters
def _shingle_vectorizer(shingle_size: int):
    """A binary ``CountVectorizer`` of word ``shingle_size``-grams whose feature columns are
    left in first-seen order: sorting millions of shingle strings by name (what
    ``CountVectorizer`` does at the end of ``fit``) is most of its time, and the order does not
    matter here. If scikit-learn renames that hook this is merely slower."""
    from sklearn.feature_extraction.text import CountVectorizer

    class ShingleVectorizer(CountVectorizer):
        def _sort_features(self, X, vocabulary):  # noqa: N803 (scikit-learn's naming)
            return X

    return ShingleVectorizer(binary=True, lowercase=True, analyzer="word",
                             token_pattern=r"(?u)\b\w+\b",
                             ngram_range=(shingle_size, shingle_size), dtype=np.int32)


def near_duplicate_mask(texts: Sequence[str], threshold: float, shingle_size: int,
                        chunk: int = NEAR_DUP_CHUNK) -> np.ndarray:
    """True for each text whose word-shingle Jaccard similarity with an earlier kept text is
    >= ``threshold`` (greedy in order: the first of each similar pair is kept).

    Shingle sets are the rows of a binary ``CountVectorizer`` matrix ``X``. Candidate pairs
    come from prefix filtering: order shingles from rarest to most common; two sets with
    Jaccard >= t share a shingle among the first ``|x| - ceil(t |x|) + 1`` of each, so products
    of row chunks of that (much sparser) prefix matrix with its transpose find every candidate
    without ever touching the dense all-pairs matrix (boilerplate shingles that occur in every
    document are the most common and never in a prefix). Candidates are then scored exactly
    from ``X``. Texts with fewer words than ``shingle_size`` have no shingles and are never
    near duplicates (exact duplicates are another filter).
    """
    from scipy import sparse

    n = len(texts)
    drop = np.zeros(n, dtype=bool)
    if n < 2:
        return drop
    try:
        x = _shingle_vectorizer(shingle_size).fit_transform(texts).tocsr()
    except ValueError:  # empty vocabulary: no text has enough words
        return drop
    x.sum_duplicates()
    sizes = np.diff(x.indptr).astype(np.int64)
    # prefix matrix: each row's rarest shingles (ties broken by column index)
    df = np.bincount(x.indices, minlength=x.shape[1])
    rank = np.empty(x.shape[1], dtype=np.int64)
    rank[np.lexsort((np.arange(x.shape[1]), df))] = np.arange(x.shape[1])
    rows = np.repeat(np.arange(n, dtype=np.int64), sizes)
    order = np.lexsort((rank[x.indices], rows))
    pos = np.arange(len(order), dtype=np.int64) - x.indptr[rows[order]]
    need = np.ceil(threshold * sizes - 1e-9).astype(np.int64)
    prefix_len = np.where(sizes > 0, sizes - need + 1, 0)
    keep = order[pos < prefix_len[rows[order]]]
    p = sparse.csr_matrix((np.ones(len(keep), dtype=np.int32),
                           (rows[keep], x.indices[keep])), shape=x.shape)
    pt = p.T.tocsr()
    cand_i, cand_j = [], []
    for start in range(0, n, chunk):
        prod = (p[start:start + chunk] @ pt).tocoo()
        r = prod.row.astype(np.int64) + start
        c = prod.col.astype(np.int64)
        upper = c > r
        cand_i.append(r[upper])
        cand_j.append(c[upper])
    ci, cj = np.concatenate(cand_i), np.concatenate(cand_j)
    if not len(ci):
        return drop
    # exact Jaccard of the candidates, a bounded number of row pairs at a time
    hit = np.zeros(len(ci), dtype=bool)
    step = max(1, 4_000_000 // max(1, int(sizes.mean())))
    for start in range(0, len(ci), step):
        a, b = ci[start:start + step], cj[start:start + step]
        inter = np.asarray(x[a].multiply(x[b]).sum(axis=1)).ravel().astype(np.int64)
        union = sizes[a] + sizes[b] - inter
        hit[start:start + step] = inter >= threshold * union - 1e-9  # Jaccard >= t
    pi, pj = ci[hit], cj[hit]
    order = np.lexsort((pj, pi))
    # Greedy in document order: a document is dropped if it near-duplicates an earlier
    # document that was itself kept. Loops over the similar pairs only, not over n^2.
    for a_, b_ in zip(pi[order].tolist(), pj[order].tolist(), strict=True):
        if not drop[a_]:
            drop[b_] = True
    return drop


def filter_documents(df: pd.DataFrame, universe: Universe, filters: FilterSpec
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the filters in order; return (kept documents, report with one row per filter).

    ``df`` has the documents columns, and optionally ``status`` ("ok" / "unsuitable" /
    "missing_content", as the pipeline sets it); a text that is empty or exactly
    ``UNSUITABLE`` counts as unsuitable or missing too. Raises ``NoDocumentsError`` when
    nothing is left.
    """
    missing = [c for c in ("doc_id", "text") if c not in df.columns]
    if missing:
        raise ValueError(f"universe {universe.id}: document frame lacks column(s) {missing}")
    cur = df.reset_index(drop=True).copy()
    cur["text"] = cur["text"].fillna("").astype(str)
    report = []

    def apply(name: str, drop: np.ndarray | pd.Series) -> None:
        nonlocal cur
        drop = np.asarray(drop, dtype=bool)
        n_in = len(cur)
        cur = cur.loc[~drop].reset_index(drop=True)
        report.append({"filter": name, "n_in": n_in, "n_removed": int(drop.sum()),
                       "n_out": len(cur)})

    text = cur["text"]
    bad = text.str.strip().isin(["", UNSUITABLE])
    if "status" in cur.columns:
        bad |= cur["status"].fillna("missing_content").ne("ok")
    apply(FILTERS[0], bad)

    if filters.drop_truncated and "truncated" in cur.columns:
        apply(FILTERS[1], cur["truncated"].fillna(False).astype(bool))
    else:
        apply(FILTERS[1], np.zeros(len(cur), dtype=bool))

    n_chars = cur["text"].str.strip().str.len()
    apply(FILTERS[2], (n_chars < filters.min_chars) | (n_chars > filters.max_chars))

    placeholder = np.zeros(len(cur), dtype=bool)
    for pat in filters.patterns:
        placeholder |= cur["text"].map(lambda s, p=pat: p.search(s) is not None).to_numpy(bool)
    apply(FILTERS[3], placeholder)

    terms = [t.lower() for t in universe.leakage_terms if t.strip()]
    lowered = cur["text"].str.lower()
    leak = np.zeros(len(cur), dtype=bool)
    for term in terms:
        leak |= lowered.str.contains(term, regex=False).to_numpy(bool)
    apply(FILTERS[4], leak)

    apply(FILTERS[5], cur["text"].map(_norm).duplicated(keep="first"))

    apply(FILTERS[6], near_duplicate_mask(cur["text"].tolist(),
                                          filters.near_duplicate_threshold,
                                          filters.shingle_size))

    report_df = pd.DataFrame(report, columns=REPORT_COLUMNS)
    for r in report:
        if r["n_removed"]:
            log.info("%s: filter %s removed %d of %d", universe.id, r["filter"],
                     r["n_removed"], r["n_in"])
    if cur.empty:
        raise NoDocumentsError(universe.id, report_df)
    for c in DOC_COLUMNS:
        if c not in cur.columns:
            cur[c] = {"revised": False, "truncated": False, "sample_index": 0,
                      "completion_tokens": 0}.get(c, "")
    return _typed(cur[DOC_COLUMNS]), report_df


# ---------------------------------------------------------------------------------- external
def load_external_documents(path: str | Path, universe_id: str) -> pd.DataFrame:
    """A released document set (.jsonl, one JSON object per line, or .parquet) with a
    ``text`` (or else ``content``) column, in the documents schema. Other columns are ignored;
    a missing or null text becomes "" (removed by the first filter)."""
    p = Path(path)
    if not p.is_file():
        raise ExternalDocumentsError(f"external documents {p}: file not found")
    ext = p.suffix.lower()
    if ext == ".jsonl":
        records = []
        with p.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ExternalDocumentsError(
                        f"external documents {p}: line {lineno} is not valid JSON "
                        f"({exc.msg})") from exc
                if not isinstance(obj, dict):
                    raise ExternalDocumentsError(
                        f"external documents {p}: line {lineno} is not a JSON object")
                records.append(obj)
        columns = set().union(*records) if records else set()
        frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    elif ext == ".parquet":
        try:
            frame = pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise ExternalDocumentsError(f"external documents {p}: cannot read Parquet "
                                         f"({type(exc).__name__}: {exc})") from exc
        columns = set(frame.columns)
    else:
        raise ExternalDocumentsError(f"external documents {p}: unknown extension "
                                     f"{p.suffix!r}; expected .jsonl or .parquet")
    col = "text" if "text" in columns else "content" if "content" in columns else None
    if col is None and len(frame):
        raise ExternalDocumentsError(f"external documents {p}: no 'text' or 'content' column "
                                     f"(columns: {sorted(map(str, columns))})")
    if not len(frame):
        raise ExternalDocumentsError(f"external documents {p}: no documents")
    values = frame[col].tolist()
    for n, v in enumerate(values):
        if v is not None and not isinstance(v, str) and not (isinstance(v, float)
                                                             and np.isnan(v)):
            raise ExternalDocumentsError(f"external documents {p}: row {n + 1}: '{col}' is "
                                         f"{type(v).__name__}, expected a string")
    texts = [v if isinstance(v, str) else "" for v in values]
    out = pd.DataFrame({
        "doc_id": [f"{universe_id}-ext-{n}" for n in range(len(texts))],
        "universe": universe_id, "doc_type": "", "idea": "", "text": texts,
        "revised": False, "truncated": False, "sample_index": 0,
        "generator": f"external:{p.name}", "completion_tokens": 0,
    }, columns=DOC_COLUMNS)
    log.info("loaded %d external document(s) for %s from %s", len(out), universe_id, p.name)
    return _typed(out)
