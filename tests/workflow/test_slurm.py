"""The tiny DAG through profiles/slurm on a real single-node SLURM cluster (ci/slurm/start.sh).

Runs only where asked (MP_TEST_SLURM=1, or CI=true unless MP_TEST_SLURM=0): the fixture installs
and starts munged, MariaDB, slurmdbd, slurmctld and slurmd as root. Skipped, with the reason,
when not root or when the cluster cannot be brought up; the cluster is stopped afterwards
(unless it was already running before the module started).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_config

from motivation_profiles.core.provenance import read_provenance

STATE = Path(os.environ.get("MP_SLURM_DIR", "/tmp/mp-slurm"))
ACCOUNT = os.environ.get("MP_SLURM_ACCOUNT", "mp-ci")
PROFILE = REPO / "profiles" / "slurm"
START, STOP = REPO / "ci/slurm/start.sh", REPO / "ci/slurm/stop.sh"
RUN_TIMEOUT = 900      # s for the whole DAG (14 jobs: the organism is trained first, then 6 waves)
# What the tiny jobs may ask of a test node (2 CPUs suffice); the profile's own values are for
# a real cluster and would not fit.
NODE_CAPS = {"mem_mb": 3000, "runtime": 20, "cpus_per_task": 1, "cpus_per_gpu": 1}
EXPECTED_RULES = {"prepare_model", "goals", "rollouts", "metrics", "metrics_table",
                  "figure_baseline", "judge", "figure_judge_scores", "departures", "browser",
                  # the model organism (organism: train) every rollout runs on
                  "generate_documents", "sdf_dataset", "train_lora"}
# the local judge and document generator are the tiny model, on its (fake) GPU
GPU_RULES = {"rollouts", "judge", "train_lora", "generate_documents"}

_wanted = os.environ.get("MP_TEST_SLURM") == "1" or (
    os.environ.get("CI", "").lower() == "true" and os.environ.get("MP_TEST_SLURM") != "0")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _wanted, reason="set MP_TEST_SLURM=1 (starts SLURM daemons as root)"),
]


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture(scope="module")
def slurm_env():
    """Start the local cluster; yield the environment that points Slurm's tools at it."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (apt-get, daemons)")
    was_running = _alive(STATE / "run/slurmctld.pid")
    env = {**os.environ, "MP_SLURM_DIR": str(STATE), "MP_SLURM_ACCOUNT": ACCOUNT}
    try:
        proc = subprocess.run([str(START)], capture_output=True, text=True, env=env, timeout=400)
    except subprocess.TimeoutExpired:
        subprocess.run([str(STOP)], capture_output=True, env=env, timeout=180)
        pytest.skip("ci/slurm/start.sh did not finish in 400 s")
    if proc.returncode != 0:
        subprocess.run([str(STOP)], capture_output=True, env=env, timeout=180)
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        detail = "\n".join(lines[-25:-1])
        pytest.skip(f"local SLURM cluster did not come up: {lines[-1]}"
                    + (f"\n{detail}" if detail else ""))
    print(proc.stdout.strip())
    yield {**env, "SLURM_CONF": str(STATE / "etc/slurm.conf")}
    if not was_running:
        stop = subprocess.run([str(STOP)], capture_output=True, text=True, env=env, timeout=180)
        assert stop.returncode == 0, f"ci/slurm/stop.sh failed:\n{stop.stderr}"


def _fit_to_node(profile: dict) -> tuple[list[str], list[str]]:
    """The profile's resources as CLI overrides, capped to what the test node has.

    On the command line --default-resources/--set-resources replace the profile's mappings, so
    every entry is restated; requests other than size (partition, gpu, ...) stay as they are.
    """
    def capped(res: dict) -> dict:
        return {k: (min(v, NODE_CAPS[k]) if isinstance(v, int) else NODE_CAPS[k])
                if k in NODE_CAPS else v for k, v in res.items()}

    defaults = capped(profile.get("default-resources") or {})
    defaults["slurm_account"] = ACCOUNT
    # rules may size memory from the config (rollouts: 64 GB per GPU): cap it for every rule
    per_rule = {rule: capped({"mem_mb": NODE_CAPS["mem_mb"], **res})
                for rule, res in (profile.get("set-resources") or {}).items()}
    return ([f"{k}={v}" for k, v in defaults.items()],
            [f"{rule}:{k}={v}" for rule, res in per_rule.items() for k, v in res.items()])


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int) -> tuple[int, str]:
    """Run snakemake; on timeout interrupt it with SIGINT (it ignores SIGTERM), which makes
    the executor scancel its jobs."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        return -signal.SIGINT, f"TIMED OUT after {timeout}s (sent SIGINT)\n{out}"
    return proc.returncode, out


def _slurm_logs(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake/slurm_logs").rglob("*.log"))
    return "\n".join(f"--- {p.relative_to(workdir)}\n{p.read_text()[-1500:]}" for p in logs)


def _sacct(env: dict, run_id: str) -> list[dict]:
    fields = ["JobID", "JobName", "State", "AllocTRES", "Partition", "Account", "Comment"]
    out = subprocess.run(
        ["sacct", "-a", "-n", "-P", "-X", "--name", run_id, "--format", ",".join(fields)],
        capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    return [dict(zip(fields, line.split("|", len(fields) - 1), strict=True))
            for line in out.splitlines() if line.strip()]


def _rules_of(comment: str, groups: dict) -> set[str]:
    """The rules a job ran, from the comment the executor gives it: rule_<rule>[_wildcards_…]
    for one job, rule_<group>_<rule>_<rule>… for a group job (profile key `groups`)."""
    assert comment.startswith("rule_"), comment
    name = comment.removeprefix("rule_")
    for group in set(groups.values()):
        if name.startswith(f"{group}_"):
            members = name.removeprefix(f"{group}_")
            return {rule for rule, g in groups.items() if g == group and rule in members}
    return {name.split("_wildcards_")[0]}


def test_tiny_dag_on_slurm(slurm_env, tmp_path):
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    partition = profile["default-resources"]["slurm_partition"]
    defaults, per_rule = _fit_to_node(profile)

    cfg_path = tmp_path / "test-config.yaml"
    cfg = tiny_config()
    cfg["models"]["tiny"]["gpus"] = 1  # the rollouts job asks SLURM for one (fake) GPU
    cfg["screening"]["enabled"] = False  # one rollouts job (baseline), not two
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {**slurm_env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(cfg_path),
           "--profile", str(PROFILE),
           "--default-resources", *defaults, "--set-resources", *per_rule,
           # poll sacct often: the tiny jobs take seconds, the profile's 40 s suits real ones
           "--slurm-init-seconds-before-status-checks", "3"]
    rc, out = _run(cmd, tmp_path, env, RUN_TIMEOUT)
    assert rc == 0, f"snakemake failed ({rc}):\n{out[-6000:]}\n{_slurm_logs(tmp_path)[-6000:]}"

    # every output of the DAG, as in test_e2e
    outputs = {
        "model": tmp_path / "resources/models/tiny/manifest.json",
        "goals": tmp_path / "results/goals/goals.parquet",
        "rollouts": tmp_path / "results/rollouts/tiny/baseline.parquet",
        "judge": tmp_path / "results/judge/tiny/baseline.parquet",
        "metrics": tmp_path / "results/metrics/tiny/conditions.parquet",
        "png": tmp_path / "results/figures/baseline_compliance.png",
        "pdf": tmp_path / "results/figures/baseline_compliance.pdf",
    }
    for name, path in outputs.items():
        assert path.is_file() and path.stat().st_size > 0, name

    # the jobs ran on SLURM: one accounting record per rule job, found by the run's job name
    match = re.search(r"SLURM run ID: (\S+)", out)
    assert match, f"no SLURM run ID in the output:\n{out[-3000:]}"
    rows = _sacct(env, match.group(1))
    print("\nsacct (JobID|JobName|State|AllocTRES|Partition|Account|Comment):")
    for row in rows:
        print("  " + "|".join(row.values()))
    by_rule: dict[str, list[dict]] = {}
    for row in rows:
        for rule in _rules_of(row["Comment"], profile.get("groups") or {}):
            by_rule.setdefault(rule, []).append(row)
    assert set(by_rule) == EXPECTED_RULES, f"jobs per rule: {by_rule}"  # all/figures stay local
    for rule, jobs in by_rule.items():
        assert len(jobs) == 1, f"{rule} ran {len(jobs)} times: {jobs}"
        job = jobs[0]
        assert job["State"] == "COMPLETED", job
        assert job["Partition"] == partition, job
        assert job["Account"] == ACCOUNT, job
        tres = dict(item.split("=", 1) for item in job["AllocTRES"].split(",") if "=" in item)
        if rule in GPU_RULES:
            assert tres.get("gres/gpu") == "1", f"{rule} should hold one GPU: {job}"
        else:
            assert "gres/gpu" not in tres, f"{rule} should hold no GPU: {job}"

    # the tables record the SLURM job that wrote them
    assert read_provenance(outputs["rollouts"])["slurm_job_id"] == by_rule["rollouts"][0]["JobID"]
    assert read_provenance(outputs["metrics"])["slurm_job_id"] == by_rule["metrics"][0]["JobID"]
