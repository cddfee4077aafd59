"""Atomic file writes and YAML reading: the only way the package writes a file.

Permissions. A file written through :func:`atomic_path` gets the mode the process umask
implies for a new file (``0o666 & ~umask``) and every directory it creates ``0o777 & ~umask``,
like a plain ``open(path, "w")``: the temporary sibling is created with ``O_CREAT | O_EXCL``
and mode ``0o666``, and the kernel applies the umask (and a directory's default ACL, if any).
``tempfile.mkstemp`` would give 0600 whatever the umask, so a teammate could not read the
results or share a response cache. With ``umask 002`` results are group-writable too.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# libyaml's loader when PyYAML was built with it: same results as yaml.safe_load, ~10x faster
# on the 28 KB schema, which every Snakemake invocation parses.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

FILE_MODE = 0o666
"""The mode new files are created with, before the umask (what ``open(path, "w")`` uses)."""


def load_yaml(stream) -> Any:
    """``yaml.safe_load`` through libyaml when available."""
    return yaml.load(stream, Loader=_YAML_LOADER)


def _create_temporary(path: Path) -> Path:
    """A new empty file next to ``path`` (a dot name, so globs skip it), mode 0o666 & ~umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, FILE_MODE)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {path}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    An interrupted writer leaves no half-written file under the final name. The file (and any
    parent directory created) gets the mode the umask implies, as described in the module
    docstring.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (UTF-8 unless told, whatever the locale)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)


def write_json_atomic(path: str | Path, value: Any, *, indent: int | None = None) -> None:
    """``value`` as JSON with sorted keys (byte-identical for equal values) and a final
    newline, written atomically."""
    text = json.dumps(value, sort_keys=True, indent=indent, ensure_ascii=False,
                      separators=None if indent is not None else (",", ":"))
    write_text_atomic(path, text + "\n")


@contextlib.contextmanager
def built_in_place(dest: str | Path) -> Iterator[Path]:
    """A fresh temporary sibling directory of ``dest`` to build in, renamed onto ``dest`` when
    the block succeeds and removed otherwise, so an interrupted job never leaves a half
    directory (model checkpoints, organism adapters, activation caches)."""
    dest = Path(dest)
    tmp = dest.parent / f".{dest.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
