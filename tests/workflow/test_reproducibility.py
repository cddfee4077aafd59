"""Results do not depend on how they were computed: the same config gives the same rollout and
judge tables whatever the batch size and after losing part of the response cache (tiny model,
sampling at temperature 1, through the real DAG). Resuming after a kill or a damaged resume
state: tests/backends/test_hosted_rollouts.py."""

from __future__ import annotations

import shutil

import polars as pl
import pytest
from conftest import run_snakemake, tiny_config
from polars.testing import assert_frame_equal

TABLES = ("results/rollouts/tiny/baseline.parquet", "results/judge/tiny/baseline.parquet")


def _tables(work) -> dict[str, pl.DataFrame]:
    return {t: pl.read_parquet(work / t) for t in TABLES}


def _config(batch_size: int) -> dict:
    cfg = tiny_config(temperature=1.0, max_new_tokens=12, seeds=[0, 1, 2])
    cfg["models"]["tiny"]["batch_size"] = batch_size
    cfg["judge"]["samples"] = 2
    return cfg


@pytest.mark.slow
def test_same_tables_across_batching_cache_loss_and_resume(tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    run_snakemake(clean, _config(4), "--until", "judge")
    want = _tables(clean)
    assert want[TABLES[0]]["turns"].list.len().min() >= 1

    # another batch size, with half the response cache deleted: same tables
    other = tmp_path / "other"
    shutil.copytree(clean, other)
    records = sorted((other / "results/cache/llm").rglob("*.json"))
    assert records
    for r in records[::2]:
        r.unlink()
    for t in TABLES:
        (other / t).unlink()
    run_snakemake(other, _config(1), "--until", "judge")
    got = _tables(other)
    for t in TABLES:
        cols = [c for c in want[t].columns if c not in ("batch_size",)]
        assert_frame_equal(got[t].select(cols), want[t].select(cols))
