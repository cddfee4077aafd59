"""core/io: files written through the atomic helpers get the mode the umask implies (not
mkstemp's 0600), under two umasks, for every kind of writer that goes through them; sorted JSON."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from motivation_profiles.backends.cache import ResponseCache
from motivation_profiles.core.io import atomic_path, write_json_atomic, write_text_atomic
from motivation_profiles.core.provenance import write_manifest, write_table

UMASKS = [0o022, 0o002, 0o077]


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", UMASKS, ids=oct)
def test_written_files_and_directories_follow_the_umask(tmp_path, mask):
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    with umask(mask):
        write_text_atomic(tmp_path / "a" / "b" / "text.txt", "x\n")
        write_json_atomic(tmp_path / "a" / "data.json", {"b": 1})
        with atomic_path(tmp_path / "a" / "raw.bin") as tmp:
            tmp.write_bytes(b"\0\1")
        write_table(pl.DataFrame({"x": [1, 2]}), tmp_path / "t" / "table.parquet",
                    {"rule": "test"})
        write_manifest(tmp_path / "t")
        cache = ResponseCache(tmp_path / "cache")
        record = cache.put("ab" * 32, {"text": "hi"})
    files = [tmp_path / "a/b/text.txt", tmp_path / "a/data.json", tmp_path / "a/raw.bin",
             tmp_path / "t/table.parquet", tmp_path / "t/manifest.json", record]
    dirs = [tmp_path / "a", tmp_path / "a/b", tmp_path / "t", tmp_path / "cache",
            record.parent]
    assert {str(f.relative_to(tmp_path)): oct(mode(f)) for f in files} == \
        {str(f.relative_to(tmp_path)): oct(file_mode) for f in files}
    assert {str(d.relative_to(tmp_path)): oct(mode(d)) for d in dirs} == \
        {str(d.relative_to(tmp_path)): oct(dir_mode) for d in dirs}
    if mask == 0o002:  # a group-shared cache: records and shard folders are group-writable
        assert mode(record) & stat.S_IWGRP and mode(record.parent) & stat.S_IWGRP
    assert not list(tmp_path.rglob(".*.tmp"))  # no temporary left


def test_overwriting_gives_the_current_umask_mode(tmp_path):
    """An existing private file, rewritten under umask 022, becomes 0644 (the temporary
    file's mode wins, as for any new file)."""
    p = tmp_path / "out.txt"
    with umask(0o077):
        write_text_atomic(p, "old")
    assert mode(p) == 0o600
    with umask(0o022):
        write_text_atomic(p, "new")
    assert mode(p) == 0o644 and p.read_text() == "new"


def test_temporaries_are_unique_dot_files_next_to_the_target(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as a, atomic_path(target) as b:
        assert a != b and a.parent == b.parent == tmp_path
        assert a.name.startswith(".out.txt.") and a.name.endswith(".tmp")
        assert a.is_file() and a.stat().st_size == 0
        a.write_text("first")
        b.write_text("second")
    assert target.read_text() == "first"  # the last rename (the outer block's) wins
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_text_is_utf8_whatever_the_locale(tmp_path):
    """Under the C locale (ASCII, no UTF-8 mode) a locale-encoded write would fail on "é"."""
    p = tmp_path / "u.txt"
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0",
           "PYTHONCOERCECLOCALE": "0", "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    code = ("import locale, sys; from motivation_profiles.core.io import write_text_atomic; "
            "print(locale.getpreferredencoding(False)); "
            "write_text_atomic(sys.argv[1], 'na\\u00efve \\u2014 \\u2713\\n')")  # ASCII argv
    out = subprocess.run([sys.executable, "-c", code, str(p)], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "utf" not in out.stdout.lower()  # the locale really is not UTF-8
    assert p.read_bytes() == "naïve — ✓\n".encode()


def test_write_json_atomic_is_sorted_and_byte_stable(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, {"z": 1, "a": {"y": [3, 1], "b": "é"}})
    write_json_atomic(b, {"a": {"b": "é", "y": [3, 1]}, "z": 1})
    assert a.read_bytes() == b.read_bytes()
    assert a.read_text(encoding="utf-8") == '{"a":{"b":"é","y":[3,1]},"z":1}\n'
    write_json_atomic(a, {"k": [1]}, indent=1)
    assert json.loads(a.read_text()) == {"k": [1]} and a.read_text().endswith("\n")
