"""The planner counts exactly the jobs the dry run lists, on the shipped configs."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import absolutize, job_counts, load_repo_config, run_snakemake

from motivation_profiles.planner.jobs import calibration_jobs, planned_jobs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml"])
def test_job_counts_equal_the_dry_run(tmp_path, name):
    cfg = absolutize(load_repo_config(name))
    proc = run_snakemake(tmp_path, cfg, "-n", timeout=300)
    dry = job_counts(proc.stdout + proc.stderr)
    assert dry, proc.stdout[-2000:]
    assert dict(Counter(j.rule for j in planned_jobs(cfg))) == dry


def test_calibration_jobs_are_apart_and_bounded():
    cfg = absolutize(load_repo_config())
    # embedded: 4 candidates, max_per_family 1 -> 2 checkpoints x 8 interventions x standard
    jobs = calibration_jobs(cfg)
    assert Counter(j.rule for j in jobs) == {"rollouts": 16, "metrics": 16, "judge": 16}
    assert all("@prompt-" in j.target for j in jobs)
    static = {(j.rule, j.target) for j in planned_jobs(cfg)}
    assert not any((j.rule, j.target) in static for j in jobs)
