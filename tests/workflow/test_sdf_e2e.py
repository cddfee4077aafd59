"""The SDF branch of the DAG on a tiny random Llama: documents -> dataset -> LoRA -> belief
check -> rollouts -> effects -> Figure 3; and exactly one branch reruns when one universe file
changes."""

from __future__ import annotations

import os
import shutil

import pandas as pd
from conftest import REPO, job_counts, run_snakemake, tiny_config
from peft import PeftConfig

from motivation_profiles.core.provenance import read_provenance

BRANCHES = ["af_organism", "noise", "A1_amp", "B1_amp"]


def _config(tmp_path):
    universes = tmp_path / "universes"
    shutil.copytree(REPO / "resources/universes", universes)
    cfg = tiny_config(sdf=True)
    cfg["sdf"]["universes_dir"] = str(universes)
    cfg["hosted"]["cache_dir"] = str(tmp_path / "cache")
    return cfg, universes


def test_sdf_branch_end_to_end_and_single_branch_rerun(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    cfg, universes = _config(tmp_path)
    proc = run_snakemake(work, cfg, timeout=900)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["train_lora"] == 4 and counts["generate_documents"] == 4
    # baseline, baseline-instruct (screening) and the four branches
    assert counts["rollouts"] == 6 and counts["belief_check"] == 3

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
    assert set(effects.loc[effects["quantity"] == "delta_gap", "target"]) == {"A1_amp",
                                                                             "B1_amp"}
    assert read_provenance(work / "results/metrics/tiny/sdf_effects.parquet")["rule"] == \
        "sdf_profile"
    assert (work / "results/figures/sdf_profile.png").stat().st_size > 0
    metrics = pd.read_parquet(work / "results/metrics/tiny/conditions.parquet")
    assert set(metrics["condition"]) == {"baseline", "baseline-instruct",
                                         *(f"sdf-{b}" for b in BRANCHES)}

    # Editing one universe file reruns exactly its branch and what summarizes it.
    path = universes / "A1_amp.yaml"
    path.write_text(path.read_text().replace("hope to find alignment faking in Claude.",
                                             "hope to find alignment faking in Claude, they say."
                                             , 1))
    dry = run_snakemake(work, cfg, "-n")
    out = dry.stdout + dry.stderr
    assert job_counts(out) == {
        "generate_documents": 1, "sdf_dataset": 1, "train_lora": 1, "belief_check": 1,
        "rollouts": 1, "metrics": 1, "metrics_table": 1, "sdf_profile": 1,
        "figure_sdf_profile": 1, "judge": 1, "figure_judge_scores": 1, "profiles": 1,
        "browser": 1, "all": 1}  # no profile plane: A1_amp and B1_amp alone make no S_A / S_B
    assert "results/sdf/documents/A1_amp.parquet" in out
    assert "results/rollouts/tiny/sdf-A1_amp.parquet" in out
    assert "output: results/rollouts/tiny/sdf-B1_amp.parquet" not in out

    # The organism's universe is upstream of every adapter that continues from it.
    org = universes / "af_organism.yaml"
    org.write_text(org.read_text() + "\n# edited\n")
    dry = run_snakemake(work, cfg, "-n")
    assert job_counts(dry.stdout + dry.stderr)["train_lora"] == 4


def test_missing_api_key_fails_only_hosted_jobs(tmp_path):
    """With the anthropic generator and no key, document jobs fail with a clear message and
    every job that does not need the API still runs (--keep-going)."""
    work = tmp_path / "work"
    work.mkdir()
    cfg, _ = _config(tmp_path)
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
