"""Pair sets read from a file (e.g. the paper's released IC pairs)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from motivation_profiles.steering.pair_format import (
    IC_SPLITS,
    MESSAGES_DTYPE,
    OOC_SPLITS,
    PAIR_COLUMNS,
    _loci,
    _missing,
    chat_messages,
)

log = logging.getLogger(__name__)


class PairFileError(ValueError):
    """An external pairs file does not have the pairs-table format."""


# ============================================================================ external files


# Columns whose cells may mix types in a JSON file (a JSON string or a list); they are held as
# Python objects until normalized.
_LOOSE = ("pos_messages", "neg_messages", "pos_loci", "neg_loci", "pos_span", "neg_span")


def _records_frame(records: Any) -> pl.DataFrame:
    """JSON records (a list of objects, or an object of equal-length columns) as a table;
    columns in order of first appearance."""
    if isinstance(records, Mapping):
        columns = {k: list(v) for k, v in records.items() if isinstance(v, list)}
        if len(columns) != len(records) or len({len(v) for v in columns.values()}) > 1:
            raise ValueError("a JSON object of pairs must map every column to a list of the "
                             "same length")
        records = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(),
                                                                       strict=True)]
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise ValueError("expected JSON objects, one per pair")
    names = list(dict.fromkeys(k for r in records for k in r))
    return pl.DataFrame([
        pl.Series(n, [r.get(n) for r in records], dtype=pl.Object if n in _LOOSE else None,
                  strict=False) for n in names])


def _read(p: Path) -> pl.DataFrame:
    if p.suffix == ".parquet":
        return pl.read_parquet(p)
    if p.suffix == ".jsonl":
        return _records_frame([json.loads(line) for line in p.read_text().splitlines()
                               if line.strip()])
    if p.suffix == ".json":
        return _records_frame(json.loads(p.read_text()))
    raise PairFileError(f"{p}: unknown pairs file type (use .parquet, .jsonl, .json)")


def _strings(df: pl.DataFrame, col: str) -> set[str]:
    return {str(v) for v in df[col].to_list()}


def _sides_normalized(df: pl.DataFrame, p: Path) -> pl.DataFrame:
    """Messages as lists of {role, content} (JSON strings parsed), loci as lists of strings
    (one string is one locus), spans as strings or null."""
    columns, unreadable = [], []
    for side in ("pos", "neg"):
        msgs = [chat_messages(v) for v in df[f"{side}_messages"].to_list()]
        unreadable += [f"{pid} {side}" for pid, m in zip(df["pair_id"], msgs, strict=True)
                       if m is None]
        loci = [[str(x) for x in _loci(v)] for v in df[f"{side}_loci"].to_list()]
        span = f"{side}_span"
        spans = ([None if _missing(v) else str(v) for v in df[span].to_list()]
                 if span in df.columns else [None] * len(df))
        columns += [pl.Series(f"{side}_messages", msgs, dtype=MESSAGES_DTYPE),
                    pl.Series(f"{side}_loci", loci, dtype=pl.List(pl.Utf8)),
                    pl.Series(span, spans, dtype=pl.Utf8)]
    if unreadable:
        log.warning("%s: %d side(s) whose messages are not a list of {role, content} strings "
                    "or its JSON (left null; the pair filters reject them): %s", p,
                    len(unreadable), ", ".join(unreadable[:5]))
    return df.with_columns(columns)


def read_pair_file(path: str | Path, *, concept: str, source: str,
                   split: str | None) -> pl.DataFrame:
    """A user-supplied pairs file (.parquet, .jsonl or .json records) in the pairs-table format.

    Messages may be JSON strings or lists of {role, content} (they come back as lists of
    {role, content} structs; a cell that is neither is null); loci a list or one string.
    Missing ``concept`` / ``source`` / ``split`` / ``pair_id`` columns are filled in (``split``
    from the argument, or ``train`` for IC files without one); present ones must agree.
    """
    p = Path(path)
    if not p.is_file():
        raise PairFileError(f"pairs file {p} does not exist")
    try:
        df = _read(p)
    except (ValueError, OSError, pl.exceptions.PolarsError) as exc:
        if isinstance(exc, PairFileError):
            raise
        raise PairFileError(f"{p}: cannot be read ({exc})") from exc
    need = ["pos_messages", "neg_messages", "pos_loci", "neg_loci"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise PairFileError(f"{p}: missing column(s) {missing}; a pairs file needs "
                            f"{PAIR_COLUMNS}")
    for col, value in (("concept", concept), ("source", source)):
        if col in df.columns and _strings(df, col) - {value}:
            raise PairFileError(f"{p}: column {col!r} has {sorted(set(df[col].to_list()))}, "
                                f"expected {value!r}")
        df = df.with_columns(pl.lit(value, dtype=pl.Utf8).alias(col))
    if split is not None:
        if "split" in df.columns and _strings(df, "split") - {split}:
            raise PairFileError(f"{p}: column 'split' has {sorted(set(df['split'].to_list()))}, "
                                f"expected {split!r}")
        df = df.with_columns(pl.lit(split, dtype=pl.Utf8).alias("split"))
    elif "split" not in df.columns:
        log.info("%s: no split column; every pair is a training pair", p)
        df = df.with_columns(pl.lit("train", dtype=pl.Utf8).alias("split"))
    allowed = OOC_SPLITS if source == "ooc" else IC_SPLITS
    bad = _strings(df, "split") - set(allowed)
    if bad:
        raise PairFileError(f"{p}: unknown split(s) {sorted(bad)}; expected {allowed}")
    ids = (df["pair_id"].to_list() if "pair_id" in df.columns
           else [f"{p.stem}-{i:05d}" for i in range(len(df))])
    df = df.with_columns(pl.Series("pair_id", [str(v) for v in ids], dtype=pl.Utf8))
    if df["pair_id"].is_duplicated().any():
        raise PairFileError(f"{p}: pair_id values are not unique")
    df = _sides_normalized(df, p)
    return df.select(PAIR_COLUMNS + [c for c in df.columns if c not in PAIR_COLUMNS])
