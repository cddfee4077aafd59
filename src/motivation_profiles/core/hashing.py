"""Content hashes: canonical JSON, config hashes, sha256 of files and directories."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the whole config (stored in every output's metadata)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


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


MANIFEST = "manifest.json"
