"""Prompt interventions, the judge, the calibration checkpoint and the profiles on a tiny
random Llama, end to end (the shared ``tiny_full_dag`` run); then the partial reruns a judge
change and a claim edit schedule."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from conftest import edited, job_counts, run_snakemake

from motivation_profiles.core.provenance import read_provenance

pytestmark = pytest.mark.slow

PROMPTS = ["prompt-A1_amp-standard", "prompt-A1_sup-standard", "prompt-B1_amp-standard",
           "prompt-B1_sup-standard"]


def test_prompt_judge_calibration_profiles_and_partial_reruns(tiny_full_dag):
    work, cfg, claims = tiny_full_dag.work, tiny_full_dag.config, tiny_full_dag.claims
    res = work / "results"

    # every rollout table has a judge table with one row per rollout
    rollout_tables = sorted((res / "rollouts/tiny").glob("*.parquet"))
    judged = {p.name for p in (res / "judge/tiny").glob("*.parquet")}
    assert {p.name for p in rollout_tables} == judged
    for p in rollout_tables:
        r, j = pd.read_parquet(p), pd.read_parquet(res / "judge/tiny" / p.name)
        assert len(r) == len(j)
        assert list(zip(r["goal_id"], r["tier"], r["seed"], strict=True)) == \
            list(zip(j["goal_id"], j["tier"], j["seed"], strict=True))
        assert set(j["judge_model"]) == {"tiny"}
    assert read_provenance(res / "judge/tiny/baseline.parquet")["rule"] == "judge"

    # the claim is in the system prompt of its condition only
    base = pd.read_parquet(res / "rollouts/tiny/baseline.parquet")
    amp = pd.read_parquet(res / "rollouts/tiny/prompt-A1_amp-standard.parquet")
    assert base["claim"].isna().all() and amp["claim"].notna().all()
    assert set(base["system_prompt_hash"]).isdisjoint(set(amp["system_prompt_hash"]))

    # calibration: the selection, the checkpoints' prompt conditions, the recovery flag
    selection = pd.read_parquet(res / "calibration/tiny/selection.parquet")
    assert set(selection["checkpoint"]) == {"A1_amp", "B1_amp"}
    chosen = list(selection.loc[selection["selected"], "checkpoint"])
    for c in chosen:
        for p in PROMPTS:
            assert (res / f"rollouts/tiny/sdf-{c}@{p}.parquet").is_file()
            assert (res / f"judge/tiny/sdf-{c}@{p}.parquet").is_file()
    cal = pd.read_parquet(res / "calibration/tiny/calibration.parquet")
    assert set(cal["checkpoint"].dropna()) == set(chosen)
    assert "recovered" in cal.columns

    # profiles: prompt, SDF and steering points for the model, with CIs
    prof = pd.read_parquet(res / "metrics/profiles.parquet")
    assert set(prof["method"]) == {"prompt", "sdf", "steering"}
    assert set(prof["quantity"]) == {"S_A", "S_B"}
    assert (prof["ci_low"] <= prof["estimate"] + 1e-12).all()
    assert (prof["estimate"] <= prof["ci_high"] + 1e-12).all()
    for name in ("profile_plane", "prompt_calibration", "judge_scores"):
        assert (res / f"figures/{name}.png").stat().st_size > 0

    # A different judge setting reruns the judge jobs (the AF rubric's and the raw-AdvBench
    # compliance judge's) and what reads them: the judge figure, the steering summaries
    # (steered reasoning decomposed by the judge) and their figures; nothing else.
    n_raw = sum(p.name.startswith("raw-") for p in rollout_tables)
    assert n_raw == 3
    rescore = {**cfg, "judge": {**cfg["judge"], "max_tokens": cfg["judge"]["max_tokens"] + 1}}
    dry = run_snakemake(work, rescore, "-n")
    assert job_counts(dry.stdout + dry.stderr) == {
        "judge": len(rollout_tables) - n_raw, "judge_raw": n_raw, "figure_judge_scores": 1,
        "steering_summary": 1, "raw_summary": 1, "figure_steering_ic": 1,
        "figure_steering_ooc": 1, "figure_steering_random": 1, "figure_steering_raw": 1,
        "browser": 1, "all": 1}

    # Editing one claim reruns the rollouts that append it (base model and every calibrated
    # checkpoint) and their summaries, nothing else.
    path = claims / "A1_amp.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["standard"] = doc["standard"].rstrip() + " This is documented."
    with edited(path, yaml.safe_dump(doc, sort_keys=False)):
        dry = run_snakemake(work, cfg, "-n")
    out = dry.stdout + dry.stderr
    n = 1 + len(chosen)  # metrics per condition: the base model's (calibration: effects only)
    assert job_counts(out) == {
        "rollouts": n, "metrics": 1, "judge": n, "metrics_table": 1, "prompt_profile": 1,
        "calibration": 1, "profiles": 1, "figure_profile_plane": 1,
        "figure_prompt_calibration": 1, "figure_judge_scores": 1, "browser": 1, "all": 1}
    assert "results/rollouts/tiny/prompt-A1_amp-standard.parquet" in out
    assert "output: results/rollouts/tiny/prompt-A1_sup-standard.parquet" not in out

