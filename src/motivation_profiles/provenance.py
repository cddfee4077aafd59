"""Atomic writes, content hashes and provenance metadata for every table the workflow writes.

Every Parquet output carries, under the key-value metadata key ``motivation_profiles``, a JSON
object with the producing rule, the config hash, the package version, the git commit, the SLURM
job id when there is one, and the sha256 of each input. ``motivation-profiles provenance FILE``
prints it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .config import canonical_json, config_hash

METADATA_KEY = b"motivation_profiles"
MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted writer leaves no half-written file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: str | Path) -> str:
    """Content hash of a file, or of a directory.

    A directory with a ``manifest.json`` (written by prepare_model and other directory
    producers) is identified by the manifest's hash, so multi-GB checkpoints are not re-read;
    any other directory hashes its files' relative names and contents.
    """
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    if not p.is_dir():
        raise FileNotFoundError(f"cannot hash {path}: no such file or directory")
    manifest = p / MANIFEST
    if manifest.is_file():
        return sha256_file(manifest)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


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


_REPO = Path(__file__).resolve().parents[2]


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


def write_table(df: pd.DataFrame, path: str | Path, provenance: Mapping[str, Any]) -> None:
    """Write ``df`` as Parquet with ``provenance`` in the file's key-value metadata, atomically."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(provenance, sort_keys=True).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def read_provenance(path: str | Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise KeyError(f"{path} has no motivation_profiles provenance metadata")
    return json.loads(meta[METADATA_KEY])
