"""Filters on generated documents: length, leakage, placeholders, near duplicates."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.core.specs import spec_from_mapping
from motivation_profiles.sdf.materials import Universe

log = logging.getLogger(__name__)


REPORT_SCHEMA = {"filter": pl.Utf8, "n_in": pl.Int64, "n_removed": pl.Int64, "n_out": pl.Int64}


REPORT_COLUMNS = list(REPORT_SCHEMA)


FILTERS = ("unsuitable_or_missing_content", "truncated", "length", "placeholder", "leakage",
           "exact_duplicate", "near_duplicate")


NEAR_DUP_CHUNK = 512  # rows of the shingle matrix multiplied at a time


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


def filter_documents(df: pl.DataFrame, universe: Universe, filters: FilterSpec
                     ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply the filters in order; return (kept documents, report with one row per filter).

    ``df`` has the documents columns, and optionally ``status`` ("ok" / "unsuitable" /
    "missing_content", as the pipeline sets it); a text that is empty or exactly
    ``UNSUITABLE`` counts as unsuitable or missing too. Raises ``NoDocumentsError`` when
    nothing is left. Text tests run on the Python strings (``str.strip``, ``str.lower``), as
    they always have.
    """
    missing = [c for c in ("doc_id", "text") if c not in df.columns]
    if missing:
        raise ValueError(f"universe {universe.id}: document frame lacks column(s) {missing}")
    cur = df.with_columns(pl.col("text").cast(pl.Utf8).fill_null(""))
    report = []

    def apply(name: str, drop: np.ndarray | list[bool]) -> None:
        nonlocal cur
        drop = np.asarray(drop, dtype=bool)
        n_in = len(cur)
        cur = cur.filter(pl.Series(~drop))
        report.append({"filter": name, "n_in": n_in, "n_removed": int(drop.sum()),
                       "n_out": len(cur)})

    def texts() -> list[str]:
        return cur["text"].to_list()

    bad = np.array([t.strip() in ("", UNSUITABLE) for t in texts()], dtype=bool)
    if "status" in cur.columns:
        bad |= np.array([s != "ok" for s in cur["status"].to_list()], dtype=bool)
    apply(FILTERS[0], bad)

    if filters.drop_truncated and "truncated" in cur.columns:
        apply(FILTERS[1], cur["truncated"].cast(pl.Boolean).fill_null(False).to_list())
    else:
        apply(FILTERS[1], np.zeros(len(cur), dtype=bool))

    n_chars = np.array([len(t.strip()) for t in texts()], dtype=np.int64)
    apply(FILTERS[2], (n_chars < filters.min_chars) | (n_chars > filters.max_chars))

    patterns = filters.patterns
    apply(FILTERS[3], [any(p.search(t) is not None for p in patterns) for t in texts()])

    terms = [t.lower() for t in universe.leakage_terms if t.strip()]
    lowered = [t.lower() for t in texts()]
    apply(FILTERS[4], [any(term in t for term in terms) for t in lowered])

    apply(FILTERS[5], _duplicated(_norm(t) for t in texts()))

    apply(FILTERS[6], near_duplicate_mask(texts(), filters.near_duplicate_threshold,
                                          filters.shingle_size))

    report_df = pl.DataFrame(report, schema=REPORT_SCHEMA)
    for r in report:
        if r["n_removed"]:
            log.info("%s: filter %s removed %d of %d", universe.id, r["filter"],
                     r["n_removed"], r["n_in"])
    if cur.is_empty():
        raise NoDocumentsError(universe.id, report_df)
    defaults = {"revised": False, "truncated": False, "sample_index": 0, "completion_tokens": 0}
    cur = cur.with_columns(pl.lit(defaults.get(c, "")).alias(c)
                           for c in DOC_COLUMNS if c not in cur.columns)
    return _typed(cur.select(DOC_COLUMNS)), report_df


def _duplicated(keys) -> list[bool]:
    """True for every key seen earlier (the first occurrence is kept)."""
    seen: set[str] = set()
    out = []
    for k in keys:
        out.append(k in seen)
        seen.add(k)
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


DOC_SCHEMA = {"doc_id": pl.Utf8, "universe": pl.Utf8, "doc_type": pl.Utf8, "idea": pl.Utf8,
              "text": pl.Utf8, "revised": pl.Boolean, "truncated": pl.Boolean,
              "sample_index": pl.Int64, "generator": pl.Utf8, "completion_tokens": pl.Int64}


DOC_COLUMNS = list(DOC_SCHEMA)


UNSUITABLE = "UNSUITABLE"


class NoDocumentsError(ValueError):
    """No document of a universe survived generation and filtering."""

    def __init__(self, universe: str, report: pl.DataFrame):
        self.universe = universe
        self.report = report
        counts = "; ".join(f"{r['filter']}: {r['n_in']} in, {r['n_removed']} removed, "
                           f"{r['n_out']} out" for r in report.iter_rows(named=True))
        super().__init__(f"universe {universe}: no documents left after filtering "
                         f"({counts or 'no documents to filter'})")


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


def _typed(df: pl.DataFrame) -> pl.DataFrame:
    """The documents columns cast to their dtypes (``DOC_SCHEMA``), nulls filled with "",
    False or 0; other columns are kept."""
    fill = {pl.Utf8: "", pl.Boolean: False, pl.Int64: 0}
    return df.with_columns(pl.col(c).cast(t).fill_null(fill[t]) for c, t in DOC_SCHEMA.items())
