"""The warm-start fork server (motivation_profiles.pipeline.warm): a job handed to it runs as
it would in its own process (directory, environment, streams, threads, exit status), a killed
job's child dies with it, and a tiny DAG writes the same tables warm and cold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO, run_snakemake, tiny_config

from motivation_profiles.pipeline import warm

pytestmark = pytest.mark.skipif(not (hasattr(os, "fork") and hasattr(warm.socket, "send_fds")),
                                reason="warm start needs fork and Unix socket fd passing")

CLIENT = """
import sys
sys.path[:0] = {paths!r}
from warm_steps import FakeJob
from motivation_profiles.pipeline.warm import run_warm
status = run_warm(FakeJob(rule="rollouts", out={out!r}, threads={threads}), step={step!r})
print("status", status)
sys.exit(0 if status is None else status)
"""


def client(tmp_path: Path, step: str, *, threads: int = 1, **env: str) -> subprocess.Popen:
    out = tmp_path / "out.txt"
    code = CLIENT.format(paths=[str(REPO / "src"), str(Path(__file__).parent)], out=str(out),
                         threads=threads, step=f"warm_steps:{step}")
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **env})


def test_model_rules_are_the_rules_of_the_model_environment():
    import re

    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow/rules").glob("*.smk")))
    pattern = r"^\s*(?:rule|checkpoint) (\w+):(.*?)(?=^\s*(?:rule|checkpoint)\b|\Z)"
    ml = {m.group(1) for m in re.finditer(pattern, text, re.S | re.M)
          if "envs/ml.yaml" in m.group(2)}
    assert ml == set(warm.MODEL_RULES)


def test_only_model_rules_asked_for_and_off_cluster_go_warm():
    on = {warm.ENV_FLAG: "1"}
    assert warm.wanted("rollouts", on)
    assert not warm.wanted("metrics", on)              # tables load no model library
    assert not warm.wanted("rollouts", {})
    assert not warm.wanted("rollouts", {warm.ENV_FLAG: "0"})
    assert not warm.wanted("rollouts", {**on, "SLURM_JOB_ID": "7"})


def test_a_job_runs_in_the_servers_child_as_in_its_own_process(tmp_path):
    proc = client(tmp_path, "report", threads=2, WARM_TEST_FLAG="seen")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "status 0" in out and "stdout of the job" in out and "stderr of the job" in err
    got = dict(line.split("=", 1) for line in (tmp_path / "out.txt").read_text().splitlines())
    assert got["cwd"] == str(tmp_path) and got["flag"] == "seen"
    assert got["threads"] == "2" and got["preloaded"] == "True"
    assert int(got["pid"]) != proc.pid                  # a child of the server, not the client
    # a failing job: the client exits with the child's status
    proc = client(tmp_path, "fail")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "this job fails" in err


def test_a_killed_job_kills_its_child(tmp_path):
    proc = client(tmp_path, "sleep")
    marker = tmp_path / "out.txt"
    deadline = time.monotonic() + 300
    while not (marker.is_file() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    child = int(marker.read_text())
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the job's child outlived the killed job")


@pytest.mark.slow
def test_a_dag_writes_the_same_tables_warm_and_cold(tmp_path, monkeypatch):
    cfg = tiny_config()
    cfg["screening"]["enabled"] = True
    target = "results/judge/tiny/baseline-instruct.parquet"    # prepare, goals, rollouts, judge
    tables = {}
    for flag in ("0", "1"):
        monkeypatch.setenv(warm.ENV_FLAG, flag)
        work = tmp_path / flag
        work.mkdir()
        run_snakemake(work, cfg, target)
        tables[flag] = {p.relative_to(work): pl.read_parquet(p)
                        for p in sorted((work / "results").rglob("*.parquet"))}
        logs = "".join(p.read_text() for p in (work / "results/logs").rglob("*.log"))
        assert ("(preloaded: warm start)" in logs) == (flag == "1")
    assert tables["0"].keys() == tables["1"].keys() and len(tables["0"]) >= 3
    for path, table in tables["0"].items():
        assert table.equals(tables["1"][path]), path
