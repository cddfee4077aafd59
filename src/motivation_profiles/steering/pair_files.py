"""Pair sets read from a file (e.g. the paper's released IC pairs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from motivation_profiles.steering.pair_format import (
    IC_SPLITS,
    OOC_SPLITS,
    PAIR_COLUMNS,
    _loci,
    _messages_json,
    _missing,
)

log = logging.getLogger(__name__)


class PairFileError(ValueError):
    """An external pairs file does not have the pairs-table format."""


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
