"""The SDF branch of the DAG on a tiny random Llama (the shared ``tiny_full_dag`` run):
documents -> dataset -> LoRA -> belief check -> rollouts -> effects -> Figure 3; and exactly one
branch reruns when one universe file changes."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from conftest import edited, job_counts, run_snakemake, tiny_config
from peft import PeftConfig

from motivation_profiles.core.provenance import read_provenance

# Editing the A1_amp universe: its branch, its SDF-steering alignment, the calibration
# selection it is a candidate of (the calibrated prompt conditions on its checkpoint join the
# DAG once calibration_select has rerun) and the summaries that read them.
UNIVERSE_EDIT = {
    "generate_documents": 1, "sdf_dataset": 1, "train_lora": 1, "belief_check": 1,
    "rollouts": 1, "judge": 1, "metrics": 1, "sdf_alignment": 1,
    "figure_sdf_steering_alignment": 1, "sdf_profile": 1, "figure_sdf_profile": 1,
    "calibration_select": 1, "calibration": 1, "figure_calibration_signal": 1,
    "figure_prompt_calibration": 1, "metrics_table": 1, "profiles": 1,
    "figure_profile_plane": 1, "figure_judge_scores": 1, "browser": 1, "all": 1}
BRANCHES = ["af_organism", "noise", "A1_amp", "A1_sup", "B1_amp", "B1_sup"]


@pytest.mark.slow
def test_sdf_branch_end_to_end_and_single_branch_rerun(tiny_full_dag):
    work, cfg, universes = tiny_full_dag.work, tiny_full_dag.config, tiny_full_dag.universes
    counts = job_counts(tiny_full_dag.proc.stdout + tiny_full_dag.proc.stderr)
    assert counts["train_lora"] == 6 and counts["generate_documents"] == 6
    assert counts["belief_check"] == 5   # every branch but the organism itself

    for b in BRANCHES:
        docs = pd.read_parquet(work / f"results/sdf/documents/{b}.parquet")
        assert len(docs) > 0 and docs["text"].str.len().gt(0).all()
        report = pd.read_parquet(work / f"results/sdf/documents/{b}.filters.parquet")
        assert report["n_out"].iloc[-1] == len(docs)
        ds = pd.read_parquet(work / f"results/sdf/datasets/tiny/{b}.parquet")
        assert (ds["n_tokens"] <= 64).all()
        adapter = work / f"results/lora/tiny/{b}"
        assert (adapter / "adapter_model.safetensors").is_file()
        assert PeftConfig.from_pretrained(adapter).r == cfg["sdf"]["lora"]["rank"]
        loss = pd.read_parquet(adapter / "loss_curve.parquet")
        assert len(loss) >= 1 and loss["loss"].notna().all()
        rollouts = pd.read_parquet(work / f"results/rollouts/tiny/sdf-{b}.parquet")
        assert set(rollouts["adapter"]) == {b}
    belief = pd.read_parquet(work / "results/sdf/belief/tiny/A1_amp.parquet")
    assert set(belief["checkpoint"]) == {"base", "organism", "adapter"}
    assert belief["logprob"].lt(0).all()
    effects = pd.read_parquet(work / "results/metrics/tiny/sdf_effects.parquet")
    assert set(effects.loc[effects["quantity"] == "delta_gap", "target"]) == {
        "A1_amp", "A1_sup", "B1_amp", "B1_sup"}
    assert read_provenance(work / "results/metrics/tiny/sdf_effects.parquet")["rule"] == \
        "sdf_profile"
    assert (work / "results/figures/sdf_profile.png").stat().st_size > 0
    metrics = pd.read_parquet(work / "results/metrics/tiny/conditions.parquet")
    assert {"baseline", "baseline-instruct", *(f"sdf-{b}" for b in BRANCHES)} <= set(
        metrics["condition"])

    # Editing one universe file reruns exactly its branch and what reads it: its prompt
    # calibration (A1_amp is a calibration candidate), its SDF-steering alignment, and the
    # summaries; not the other branches.
    path = universes / "A1_amp.yaml"
    text = path.read_text().replace("hope to find alignment faking in Claude.",
                                    "hope to find alignment faking in Claude, they say.", 1)
    with edited(path, text):
        dry = run_snakemake(work, cfg, "-n")
    out = dry.stdout + dry.stderr
    counts = job_counts(out)
    assert "results/sdf/documents/A1_amp.parquet" in out
    assert "results/rollouts/tiny/sdf-A1_amp.parquet" in out
    assert "output: results/rollouts/tiny/sdf-B1_amp.parquet" not in out
    assert "output: results/sdf/documents/B1_amp.parquet" not in out
    assert UNIVERSE_EDIT == counts

    # The organism's universe is upstream of every adapter that continues from it.
    org = universes / "af_organism.yaml"
    with edited(org, org.read_text() + "\n# edited\n"):
        dry = run_snakemake(work, cfg, "-n")
    assert job_counts(dry.stdout + dry.stderr)["train_lora"] == 6
    # and put back, nothing is out of date
    assert "Nothing to be done" in run_snakemake(work, cfg, "-n").stdout


@pytest.mark.slow
def test_missing_api_key_fails_only_hosted_jobs(tmp_path):
    """With the anthropic generator and no key, document jobs fail with a clear message and
    every job that does not need the API still runs (--keep-going)."""
    work = tmp_path / "work"
    work.mkdir()
    cfg = tiny_config()   # the organism's documents are the only generated ones
    cfg["hosted"]["cache_dir"] = str(tmp_path / "cache")
    cfg["sdf"]["generator"].update(backend="anthropic", model="claude-haiku-4-5",
                                   prefill_content=False)
    env_key = os.environ.pop("ANTHROPIC_API_KEY", None)
    try:
        proc = run_snakemake(work, cfg, "--keep-going", check=False, timeout=600)
    finally:
        if env_key is not None:
            os.environ["ANTHROPIC_API_KEY"] = env_key
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (work / "results/logs/generate_documents").glob("*"))
    assert "ANTHROPIC_API_KEY is not set" in logs
    # baseline runs on the organism, whose documents need the API; the instruct model's
    # screening baseline does not
    assert (work / "results/rollouts/tiny/baseline-instruct.parquet").is_file()
    assert (work / "results/metrics/tiny/by_condition/baseline-instruct.parquet").is_file()
    assert not (work / "results/rollouts/tiny/baseline.parquet").exists()
    assert not (work / "results/sdf/documents").exists() or not list(
        (work / "results/sdf/documents").glob("*.parquet"))
