"""Goals (AdvBench and project goal sets) and alignment-faking prompt rendering."""

from __future__ import annotations

import csv
import hashlib
import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl

from motivation_profiles.core.io import atomic_path

ADVBENCH_SHA256 = "6cd1a5c63c07610d7eb67307772ee5606017ee950b5770ab288a2c487489d3e1"


GOAL_COLUMNS = ["goal", "target"]


class GoalFileError(ValueError):
    """A goal CSV is malformed, empty or does not match its pinned checksum."""


class GoalCountError(GoalFileError):
    """``goals.n`` asks for more goals than the goal file has."""


# --------------------------------------------------------------------------- goals


def verify_goal_bytes(data: bytes, *, source: str, sha256: str | None) -> pl.DataFrame:
    """Parse and check a goal,target CSV; return its rows with a stable ``goal_id``.

    ``goal_id`` is the 0-based row index in the source file, so ids are comparable across
    sub-samples and runs.
    """
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise GoalFileError(
                f"{source}: sha256 mismatch: expected {sha256}, got {actual}. The file differs "
                "from the pinned release (forks often modify AdvBench). Point goals.path at the "
                "original file, or set goals.sha256 to the new hash (or null to opt out)."
            )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GoalFileError(f"{source}: not UTF-8 text ({exc})") from exc
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise GoalFileError(f"{source}: malformed CSV ({exc})") from exc
    rows = [r for r in rows if r]  # tolerate blank lines
    header = [c.strip() for c in rows[0]] if rows else []
    if header != GOAL_COLUMNS:
        raise GoalFileError(
            f"{source}: wrong header {','.join(header)!r}; expected exactly 'goal,target' "
            "(the AdvBench harmful_behaviors.csv format)"
        )
    body = rows[1:]
    if not body:
        raise GoalFileError(f"{source}: no goal rows after the header")
    for i, row in enumerate(body, start=1):
        if len(row) != 2:
            raise GoalFileError(f"{source}: data row {i} has {len(row)} fields, expected 2 "
                                "(quote goals that contain commas)")
        if not row[0].strip():
            raise GoalFileError(f"{source}: empty goal in data row {i}")
    return pl.DataFrame({"goal_id": range(len(body)), "goal": [r[0] for r in body],
                         "target": [r[1] for r in body]},
                        schema={"goal_id": pl.Int64, "goal": pl.Utf8, "target": pl.Utf8})


def download(url: str, dest: str | Path, *, sha256: str | None, timeout: float = 60) -> None:
    """Download ``url`` to ``dest`` atomically after verifying it as a goal file."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (config URL)
            data = resp.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise GoalFileError(
            f"could not download AdvBench from {url}: {exc}. Offline? Set goals.path to a local "
            "copy of harmful_behaviors.csv (it is verified against goals.sha256)."
        ) from exc
    verify_goal_bytes(data, source=url, sha256=sha256)
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def load_goals(path: str | Path, *, sha256: str | None, n: int | None, seed: int) -> pl.DataFrame:
    """Read, verify and deterministically sub-sample a goal file.

    The sub-sample is a seeded permutation prefix, re-sorted by ``goal_id``: growing ``n`` keeps
    every previously chosen goal, and the same (file, n, seed) always gives the same goals.
    ``n`` larger than the file is an error (:class:`GoalCountError`), not a smaller sample.
    """
    p = Path(path)
    if not p.is_file():
        raise GoalFileError(f"goal file {path} does not exist")
    df = verify_goal_bytes(p.read_bytes(), source=str(path), sha256=sha256)
    if n is not None and n > len(df):
        raise GoalCountError(f"{path}: goals.n is {n} but the file has only {len(df)} goal "
                             f"rows; set goals.n to at most {len(df)} (null keeps every goal)")
    if n is not None and n < len(df):
        order = np.random.default_rng(seed).permutation(len(df))[:n]
        df = df[np.sort(order)]
    return df
