"""The planner's jobs are the DAG's: the same rules and wildcards as the dry run lists, on the
shipped configs; the calibration bound stays apart."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import absolutize, dry_run_jobs, job_counts, load_repo_config, run_snakemake

from motivation_profiles.planner.jobs import Job, Plans, calibration_jobs, dag_jobs, job_from


def _key(rule: str, wildcards: dict) -> tuple:
    return rule, tuple(sorted((str(k), str(v)) for k, v in wildcards.items()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml"])
def test_jobs_equal_the_dry_run(tmp_path, name):
    cfg = absolutize(load_repo_config(name))
    (tmp_path / "dry").mkdir()
    proc = run_snakemake(tmp_path / "dry", cfg, "-n", timeout=300)
    out = proc.stdout + proc.stderr
    dry = job_counts(out)
    assert dry, proc.stdout[-2000:]
    (tmp_path / "plan").mkdir()
    jobs = dag_jobs(cfg, tmp_path / "plan")
    assert dict(Counter(j.rule for j in jobs)) == dry
    # the same jobs, not only as many: rule and wildcards of each
    assert (Counter(_key(j.rule, dict(j.wildcards)) for j in jobs)
            == Counter(_key(j["rule"], j["wildcards"]) for j in dry_run_jobs(out)))


@pytest.mark.slow
def test_calibration_jobs_are_apart_and_bounded(tmp_path):
    cfg = absolutize(load_repo_config())
    known = dag_jobs(cfg, tmp_path)
    # embedded: per calibration model (the embedded model and the simulated organism),
    # candidates A1_amp and B1_amp, max_per_family 1 -> 2 checkpoints, each with every prompt
    # intervention at the calibration strengths
    plans = Plans(cfg)
    models = plans.prompt.calibration_models
    assert len(models) == 2
    per_model = 2 * len(plans.prompt.interventions) * len(cfg["calibration"]["strengths"])
    assert per_model >= 8
    n = per_model * len(models)
    jobs = calibration_jobs(cfg, known)
    assert Counter(j.rule for j in jobs) == {"rollouts": n, "metrics": n, "judge": n}
    assert Counter(j.model for j in jobs) == {m: 3 * per_model for m in models}
    assert all("@prompt-" in j.target for j in jobs)
    static = {(j.rule, j.model, j.target) for j in known}
    assert not any((j.rule, j.model, j.target) in static for j in jobs)
    # once the checkpoint ran, the DAG has the selection: no bound for that model
    model = jobs[0].model
    rest = calibration_jobs(cfg, known + [Job("rollouts", model, jobs[0].target)])
    assert rest and not any(j.model == model for j in rest)
    assert {j.model for j in rest} == set(models) - {model}


def test_targets_are_what_the_formulas_read():
    assert job_from("rollouts", {"model": "m", "condition": "baseline"}) == Job(
        "rollouts", "m", "baseline")
    assert job_from("judge_raw", {"model": "m", "rawcond": "baseline"}).target == "raw-baseline"
    assert job_from("ooc_pairs", {"model": "m", "concept": "expectations", "split": "train"}
                    ).target == "ooc_expectations_train"
    assert job_from("ic_pairs", {"model": "m", "concept": "expectations"}).target == \
        "ic_expectations"
    j = job_from("random_vectors", {"model": "m", "concept": "c", "source": "ooc", "k": "1"})
    assert (j.model, j.target) == ("m", "concept=c/source=ooc/k=1")
    assert job_from("browser", {}) == Job("browser")


def test_dag_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no Snakefile"):
        dag_jobs({}, tmp_path, snakefile=tmp_path / "Snakefile")
    with pytest.raises(ValueError, match="not a directory"):
        dag_jobs({}, tmp_path / "nope")
