"""Atomic writes, content hashes, Parquet provenance metadata and the provenance CLI."""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

import motivation_profiles
from motivation_profiles.cli import main
from motivation_profiles.core import provenance as prov
from motivation_profiles.core.hashing import config_hash, sha256_file, sha256_path
from motivation_profiles.core.io import atomic_path, write_text_atomic
from motivation_profiles.core.provenance import (
    MANIFEST,
    METADATA_KEY,
    provenance_record,
    read_provenance,
    read_table,
    write_manifest,
    write_table,
)

CONFIG = {"rollouts": {"temperature": 1.0, "seeds": [0, 1]}, "metrics": {"seed": 0}}


@pytest.fixture(autouse=True)
def _no_git(monkeypatch):
    """Keep the tests hermetic: no git subprocess, a fixed commit id."""
    monkeypatch.setattr(prov, "git_commit", lambda cwd=None: "0123abc-test")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def inputs(tmp_path):
    a = tmp_path / "in" / "a.txt"
    a.parent.mkdir()
    a.write_bytes(b"alpha\n")
    b = tmp_path / "in" / "b.bin"
    b.write_bytes(bytes(range(256)) * 10)
    return a, b


@pytest.fixture()
def frame() -> pl.DataFrame:
    return pl.DataFrame({
        "goal_id": pl.Series([0, 1, 2], dtype=pl.Int64),
        "tier": ["monitored", "unmonitored", "monitored"],
        "rate": [0.5, float("nan"), 1.0],
        "flag": [True, False, True],
        "turns": pl.Series([["a"], ["b", "c"], []], dtype=pl.List(pl.Utf8)),
    })


# --------------------------------------------------------------------------- tables


def test_write_read_round_trip(tmp_path, frame, inputs):
    record = provenance_record(rule="metrics", config=CONFIG, inputs=inputs,
                               params={"b": 2, "a": [1, 2]})
    out = tmp_path / "results" / "deep" / "table.parquet"
    write_table(frame, out, record)
    back = read_table(out)
    assert back.columns == frame.columns
    # list columns are native lists; a NaN is stored as null (one kind of missing value)
    assert_frame_equal(back, frame.with_columns(pl.col("rate").fill_nan(None)))
    assert back.schema["turns"] == pl.List(pl.Utf8)
    assert back["turns"].to_list() == [["a"], ["b", "c"], []]
    assert read_provenance(out) == json.loads(json.dumps(record))
    assert [p.name for p in out.parent.iterdir()] == ["table.parquet"]  # no temp file left


def test_provenance_record_fields(inputs, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    a, b = inputs
    record = provenance_record(rule="rollouts", config=CONFIG, inputs=[a, str(b)],
                               params={"z": 1, "a": {"y": 2, "x": 3}})
    assert record["rule"] == "rollouts"
    assert record["config_hash"] == config_hash(CONFIG)
    assert len(record["config_hash"]) == 64
    assert record["package_version"] == motivation_profiles.__version__
    assert record["git_commit"] == "0123abc-test"
    assert record["slurm_job_id"] == "4242"
    assert record["params"] == {"a": {"x": 3, "y": 2}, "z": 1}
    assert record["inputs"] == {str(a): sha(b"alpha\n"), str(b): sha(b.read_bytes())}


def test_provenance_record_without_config_or_slurm(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    record = provenance_record(rule="r", config=None)
    assert record["config_hash"] is None
    assert record["params"] is None
    assert record["slurm_job_id"] is None
    assert record["inputs"] == {}


def test_provenance_record_missing_input_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        provenance_record(rule="r", config=CONFIG, inputs=[tmp_path / "missing"])


def test_config_hash_in_metadata_tracks_config(tmp_path, frame):
    p1, p2 = tmp_path / "1.parquet", tmp_path / "2.parquet"
    write_table(frame, p1, provenance_record(rule="r", config=CONFIG))
    changed = {**CONFIG, "metrics": {"seed": 1}}
    write_table(frame, p2, provenance_record(rule="r", config=changed))
    assert read_provenance(p1)["config_hash"] != read_provenance(p2)["config_hash"]


def test_metadata_stored_under_package_key(tmp_path, frame):
    out = tmp_path / "t.parquet"
    write_table(frame, out, {"rule": "x"})
    meta = pq.read_schema(out).metadata
    assert json.loads(meta[METADATA_KEY]) == {"rule": "x"}
    assert b"pandas" not in meta  # written by polars: no pandas index metadata


def test_write_table_rejects_pandas(tmp_path):
    import pandas as pd

    with pytest.raises(TypeError, match="polars DataFrame"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet", {"rule": "x"})
    assert not (tmp_path / "t.parquet").exists()


def test_write_table_overwrites_atomically(tmp_path, frame):
    out = tmp_path / "t.parquet"
    write_table(frame, out, {"rule": "first"})
    write_table(frame.head(1), out, {"rule": "second"})
    assert len(read_table(out)) == 1
    assert read_provenance(out)["rule"] == "second"


def test_read_provenance_without_metadata(tmp_path):
    out = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), out)
    with pytest.raises(KeyError, match="no motivation_profiles provenance"):
        read_provenance(out)


# --------------------------------------------------------------------------- hashes


def test_sha256_file_and_path_of_file(inputs):
    a, b = inputs
    assert sha256_file(a) == sha(b"alpha\n")
    assert sha256_file(b, chunk=7) == sha(b.read_bytes())  # chunking does not matter
    assert sha256_path(b) == sha256_file(b)


def test_sha256_path_of_directory_with_manifest(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"w" * 100)
    manifest = write_manifest(d, extra={"name": "tiny"})
    assert manifest == d / MANIFEST
    h = sha256_path(d)
    assert h == sha256_file(manifest) == sha(manifest.read_bytes())
    # the manifest identifies the directory: other file contents are not re-read
    (d / "weights.bin").write_bytes(b"changed")
    assert sha256_path(d) == h


def test_sha256_path_of_directory_without_manifest(tmp_path):
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(b"a")
    (d / "sub" / "b.txt").write_bytes(b"b")
    h = sha256_path(d)
    assert h == sha256_path(d)
    expected = hashlib.sha256()
    for rel, data in [("a.txt", b"a"), ("sub/b.txt", b"b")]:
        expected.update(rel.encode() + b"\0" + sha(data).encode())
    assert h == expected.hexdigest()
    (d / "sub" / "b.txt").write_bytes(b"B")
    assert sha256_path(d) != h
    (d / "sub" / "b.txt").write_bytes(b"b")
    (d / "sub" / "b.txt").rename(d / "sub" / "c.txt")  # a rename changes the hash too
    assert sha256_path(d) != h


def test_sha256_path_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot hash"):
        sha256_path(tmp_path / "nope")


def test_write_manifest_lists_files_with_sizes(tmp_path):
    d = tmp_path / "ckpt"
    (d / "nested").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "nested" / "w.bin").write_bytes(b"\x00" * 1000)
    path = write_manifest(d, extra={"source": "random", "seed": 0})
    body = json.loads(path.read_text())
    assert body["files"] == {
        "config.json": {"sha256": sha(b"{}"), "bytes": 2},
        "nested/w.bin": {"sha256": sha(b"\x00" * 1000), "bytes": 1000},
    }
    assert body["source"] == "random" and body["seed"] == 0
    # rewriting does not list the manifest itself
    write_manifest(d)
    body = json.loads(path.read_text())
    assert MANIFEST not in body["files"] and "source" not in body
    assert sorted(p.name for p in d.iterdir()) == ["config.json", MANIFEST, "nested"]


# --------------------------------------------------------------------------- atomic_path


def test_atomic_path_success(tmp_path):
    target = tmp_path / "new" / "dir" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert not target.exists()
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_path_leaves_no_file_when_block_raises(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_keeps_old_file_when_block_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise ValueError
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_table_interrupted_writer_leaves_no_file(tmp_path, frame, monkeypatch):
    out = tmp_path / "t.parquet"
    write_table(frame, out, {"rule": "old"})

    def crash(table, where, **kw):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(prov.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        write_table(frame.head(1), out, {"rule": "new"})
    with pytest.raises(OSError, match="disk full"):
        write_table(frame, tmp_path / "other.parquet", {"rule": "new"})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]
    assert read_provenance(out)["rule"] == "old"
    assert len(read_table(out)) == 3


def test_write_text_atomic(tmp_path):
    p = tmp_path / "a" / "b.txt"
    write_text_atomic(p, "hello\n")
    assert p.read_text() == "hello\n"


# --------------------------------------------------------------------------- CLI


def test_cli_provenance_prints_json(tmp_path, frame, inputs, capsys):
    out = tmp_path / "t.parquet"
    record = provenance_record(rule="metrics", config=CONFIG, inputs=inputs)
    write_table(frame, out, record)
    assert main(["provenance", str(out)]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == json.loads(json.dumps(record))


def test_cli_provenance_without_metadata_returns_1(tmp_path, capsys):
    out = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1]}), out)
    assert main(["provenance", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error:" in captured.err and "provenance" in captured.err


def test_cli_provenance_missing_file_returns_1(tmp_path, capsys):
    assert main(["provenance", str(tmp_path / "missing.parquet")]) == 1
    assert "error:" in capsys.readouterr().err


def test_cli_provenance_not_parquet_returns_1(tmp_path, capsys):
    p = tmp_path / "not.parquet"
    p.write_text("this is not parquet at all\n")
    assert main(["provenance", str(p)]) == 1
    assert "error:" in capsys.readouterr().err
