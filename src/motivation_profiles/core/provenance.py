"""Atomic writes, content hashes and provenance metadata for every table the workflow writes.

Every Parquet output carries, under the key-value metadata key ``motivation_profiles``, a JSON
object with the producing rule, the config hash, the package version, the git commit, the SLURM
job id when there is one, and the sha256 of each input. ``motivation-profiles provenance FILE``
prints it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from motivation_profiles.core.hashing import (
    MANIFEST,
    canonical_json,
    config_hash,
    sha256_file,
    sha256_path,
)
from motivation_profiles.core.io import atomic_path, write_text_atomic
from motivation_profiles.core.version import __version__

METADATA_KEY = b"motivation_profiles"




def write_manifest(directory: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``manifest.json`` listing every file's sha256 and size in ``directory``."""
    d = Path(directory)
    files = {
        str(f.relative_to(d)): {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        for f in sorted(d.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }
    body = {"files": files, **(dict(extra) if extra else {})}
    write_text_atomic(d / MANIFEST, json.dumps(body, indent=2, sort_keys=True) + "\n")
    return d / MANIFEST


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


_REPO = Path(__file__).resolve().parents[3]


def display_path(path: str | Path) -> str:
    """A path as recorded in provenance: relative to the working directory or to the
    checkout, never absolute when avoidable (records must not leak machine layout)."""
    p = Path(path)
    if not p.is_absolute():
        return str(p)
    for base in (Path.cwd(), _REPO):
        try:
            return str(p.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(p)


def provenance_record(
    *,
    rule: str,
    config: Mapping[str, Any] | None,
    inputs: Iterable[str | Path] = (),
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "rule": rule,
        "config_hash": config_hash(config) if config is not None else None,
        "params": json.loads(canonical_json(params)) if params is not None else None,
        "package_version": __version__,
        "git_commit": git_commit(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "inputs": {display_path(p): sha256_path(p) for p in inputs},
    }


def write_table(df: pl.DataFrame, path: str | Path, provenance: Mapping[str, Any]) -> None:
    """Write ``df`` as Parquet with ``provenance`` in the file's key-value metadata, atomically.

    Tables are polars DataFrames (pyarrow underneath); list-valued columns are native Parquet
    lists. A NaN in a float column is written as null (a missing value), as the tables have
    always stored it, so readers see one kind of missing value."""
    if not isinstance(df, pl.DataFrame):
        raise TypeError(f"write_table takes a polars DataFrame, got {type(df).__name__}")
    floats = [c for c, t in df.schema.items() if t.is_float()]
    table = df.with_columns(pl.col(floats).fill_nan(None)).to_arrow() if floats else df.to_arrow()
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(provenance, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | Path) -> pl.DataFrame:
    """A table written by :func:`write_table` (or any Parquet file), as a polars DataFrame."""
    return pl.read_parquet(path)


def read_provenance(path: str | Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise KeyError(f"{path} has no motivation_profiles provenance metadata")
    return json.loads(meta[METADATA_KEY])
