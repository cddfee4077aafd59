"""The whole DAG on a tiny random-weight Llama (one shared run, a minute or two) and on the
embedded model; both slow (`make test`, not `make test-fast`)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import (
    absolutize,
    assert_table_jobs_load_no_model_library,
    dry_run_jobs,
    job_counts,
    load_repo_config,
    model_libraries_in_logs,
    run_snakemake,
    tiny_config,
)

from motivation_profiles.core.provenance import read_provenance


def _outputs(workdir, model):
    return {
        "model": workdir / f"resources/models/{model}/manifest.json",
        "goals": workdir / "results/goals/goals.parquet",
        "rollouts": workdir / f"results/rollouts/{model}/baseline.parquet",
        "metrics": workdir / f"results/metrics/{model}/conditions.parquet",
        "png": workdir / "results/figures/baseline_compliance.png",
        "pdf": workdir / "results/figures/baseline_compliance.pdf",
    }


@pytest.mark.slow
def test_tiny_end_to_end(tiny_dag):
    tmp_path = tiny_dag.work
    out = _outputs(tmp_path, "tiny")
    for name, path in out.items():
        assert path.is_file() and path.stat().st_size > 0, name
    rollouts = pd.read_parquet(out["rollouts"])
    assert len(rollouts) == 3 * 2 * 2  # goals x tiers x seeds
    assert set(rollouts["outcome"]) <= {"compliant", "rejected", "unparseable", "truncated"}
    assert rollouts.groupby(["goal_id", "tier", "seed"]).size().max() == 1
    assert rollouts["prompt_hash"].str.fullmatch("[0-9a-f]{64}").all()
    assert (rollouts["n_turns"] >= 1).all() and (rollouts["n_turns"] <= 2).all()
    # the embedded config's forced_choice mode: every rollout has a closed scratchpad, an
    # opening tag drawn by the model and a propensity; the local judge scores every scratchpad
    assert set(rollouts["output_mode"]) == {"forced_choice"}
    assert rollouts["p_accept"].between(0, 1).all()
    assert rollouts["final_output"].str.startswith(("<request_fully_accepted/>",
                                                    "<rejected/>")).all()
    judge = pd.read_parquet(tmp_path / "results/judge/tiny/baseline.parquet")
    assert set(judge["judge_scoring"]) == {"expected"} and (judge["status"] == "ok").all()
    assert judge[["a_score", "b_score", "a_mass", "b_mass"]].notna().all().all()
    metrics = pd.read_parquet(out["metrics"])
    assert sorted(metrics["condition"]) == ["baseline", "baseline-instruct"]
    assert (metrics["n_pairs"] == 6).all() and (metrics["n_p_accept_pairs"] == 6).all()
    assert metrics[["monitored_p_accept", "unmonitored_p_accept", "p_accept_gap"]].notna().all(
        axis=None)
    prov = read_provenance(out["metrics"])
    assert prov["rule"] == "metrics_table"
    assert "results/metrics/tiny/by_condition/baseline.parquet" in prov["inputs"]
    assert str(out["rollouts"].relative_to(tmp_path)) in read_provenance(
        tmp_path / "results/metrics/tiny/by_condition/baseline.parquet")["inputs"]
    assert read_provenance(out["rollouts"])["inputs"]["resources/models/tiny"]
    for rule in ("prepare_model/tiny", "goals", "rollouts/tiny/baseline",
                 "train_lora/tiny/af_organism", "metrics/tiny/baseline",
                 "metrics_table/tiny",
                 "figure_baseline"):
        assert (tmp_path / f"results/logs/{rule}.log").is_file(), rule
        assert (tmp_path / f"results/benchmarks/{rule}.tsv").is_file(), rule
    assert not list((tmp_path / "results/rollouts/tiny").glob(".*partial"))

    # every condition runs on the organism (organism: train), recorded in each row and in the
    # provenance; baseline-instruct (screening) is the bare instruct model
    assert set(rollouts["adapter"]) == {"af_organism"}
    assert "results/lora/tiny/af_organism" in read_provenance(out["rollouts"])["inputs"]
    instruct = pd.read_parquet(tmp_path / "results/rollouts/tiny/baseline-instruct.parquet")
    assert instruct["adapter"].isna().all() and len(instruct) == len(rollouts)
    assert "results/lora/tiny/af_organism" not in read_provenance(
        tmp_path / "results/rollouts/tiny/baseline-instruct.parquet")["inputs"]
    assert "adapter: af_organism" in (tmp_path / "results/logs/rollouts/tiny/baseline.log"
                                      ).read_text()
    assert "stand-in" in (tmp_path / "results/logs/rollouts/tiny/baseline.log").read_text()
    departures = pd.read_parquet(tmp_path / "results/report/departures.parquet")
    # detected stand-ins, and the choices config.yaml lists (tiny_config keeps them)
    assert set(departures["key"]) == {"prompts.system", "sdf.external_documents",
                                      "rollouts.output_mode", "rollouts.prefill",
                                      "judge.backend", "steering.ic.quantiles"}
    assert "Choices not in the paper" in (tmp_path / "results/report/departures.html"
                                          ).read_text()


@pytest.mark.slow
def test_table_and_figure_jobs_load_no_model_library(tiny_dag):
    results = tiny_dag.work / "results"
    # goals, metrics x 2 (baseline, baseline-instruct), metrics_table, departures, browser,
    # figure_baseline, figure_judge_scores
    assert assert_table_jobs_load_no_model_library(results) == 8
    # the line reports what a model job did load, so the check above can fail
    assert "torch" in model_libraries_in_logs(results)["rollouts/tiny/baseline"]


@pytest.mark.slow
def test_tiny_reruns_only_what_changed(tiny_dag):
    tmp_path, cfg = tiny_dag.work, tiny_dag.config
    out = _outputs(tmp_path, "tiny")
    # idempotent: a second run does nothing
    again = run_snakemake(tmp_path, cfg)
    assert "Nothing to be done" in again.stdout + again.stderr

    # a generation parameter change reruns rollouts and what follows, not the model or goals
    changed = run_snakemake(tmp_path, tiny_config(max_new_tokens=6), "-n")
    assert job_counts(changed.stdout + changed.stderr) == {
        "rollouts": 2, "metrics": 2, "metrics_table": 1, "figure_baseline": 1, "judge": 2,
        "figure_judge_scores": 1, "browser": 1, "all": 1}

    # settings that cannot change results (the size that sizes cluster jobs) rerun nothing;
    # the GPU count now can: it sets the organism's training processes
    resized = tiny_config()
    resized["models"]["tiny"]["params_b"] = 7
    same = run_snakemake(tmp_path, resized, "-n")
    assert "Nothing to be done" in same.stdout + same.stderr

    # a changed organism (the trained one, now given as a released adapter) reruns exactly
    # what depends on it: the organism's rollouts and what follows, not the instruct model's
    # screening baseline, the model, the goals or the organism's own training
    released = tmp_path / "released"
    shutil.copytree(tmp_path / "results/lora/tiny/af_organism", released)
    swapped = tiny_config()
    swapped["models"]["tiny"]["organism"] = {"adapter": str(released), "revision": None}
    rerun = run_snakemake(tmp_path, swapped, "-n")
    assert job_counts(rerun.stdout + rerun.stderr) == {
        "prepare_organism": 1, "rollouts": 1, "metrics": 1, "judge": 1, "metrics_table": 1,
        "figure_baseline": 1, "figure_judge_scores": 1, "departures": 1, "browser": 1,
        "all": 1}
    rerun_outputs = [o for job in dry_run_jobs(rerun.stdout) for o in job["output"]]
    assert "results/rollouts/tiny/baseline.parquet" in rerun_outputs
    assert "results/rollouts/tiny/baseline-instruct.parquet" not in rerun_outputs

    # figures redraw from cached tables alone
    out["png"].unlink()
    redraw = run_snakemake(tmp_path, cfg, "figures")
    assert job_counts(redraw.stdout + redraw.stderr) == {"figure_baseline": 1, "figures": 1}
    assert out["png"].is_file()


@pytest.mark.slow
def test_embedded_model_end_to_end(tmp_path):
    cfg = absolutize(load_repo_config())
    cfg["models"] = {m: s for m, s in cfg["models"].items() if s["source"] == "embedded"}
    cfg["goals"]["n"] = 2
    # What only the embedded model can show: the GGUF conversion, documents it writes, a LoRA
    # (its organism) trained on them, scratchpads it writes and a judge that reads them. The
    # grids (SDF branches, prompt interventions, calibration, steering, profiles) run on the
    # tiny model (tiny_full_dag: test_sdf_e2e.py, test_prompt_e2e.py, test_steering_e2e.py)
    # and on the embedded model in `make demo`.
    cfg["sdf"]["enabled"] = False            # the organism is still trained (organism: train)
    cfg["screening"]["enabled"] = False
    cfg["prompt_interventions"]["enabled"] = False
    cfg["calibration"]["enabled"] = False
    cfg["steering"]["enabled"] = False
    cfg["rollouts"].update({"max_new_tokens": 16, "max_turns": 2})
    cfg["judge"]["max_tokens"] = 8
    proc = run_snakemake(tmp_path, cfg, timeout=1500)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["generate_documents"] == counts["train_lora"] == counts["rollouts"] == 1
    out = _outputs(tmp_path, "smollm2-135m")
    for name, path in out.items():
        assert path.is_file(), name
    rollouts = pd.read_parquet(out["rollouts"])
    assert len(rollouts) == 4 and (rollouts["completion_tokens"] > 0).all()
    assert set(rollouts["adapter"]) == {"af_organism"}
    config = (tmp_path / "resources/models/smollm2-135m/config.json").read_text()
    assert '"num_hidden_layers": 30' in config and "quantization_config" not in config
    docs = pd.read_parquet(tmp_path / "results/sdf/documents/af_organism.parquet")
    assert len(docs) > 0 and docs["text"].str.len().gt(0).all()
    # the embedded model writes into the prefilled scratchpad, every outcome parses
    # (forced_choice), and the judge scores every scratchpad (expected scores)
    assert rollouts["scratchpad"].str.len().gt(0).all()
    assert set(rollouts["outcome"]) <= {"compliant", "rejected"}
    judged = pd.read_parquet(tmp_path / "results/judge/smollm2-135m/baseline.parquet")
    assert len(judged) == 4 and (judged["status"] == "ok").all()
    assert judged["a_score"].notna().all() and judged["b_score"].notna().all()
    for name in ("baseline_compliance", "judge_scores"):
        assert (tmp_path / f"results/figures/{name}.png").is_file(), name
