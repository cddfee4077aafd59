"""Dry runs of the shipped configs list exactly the expected jobs; bad configs fail first."""

from __future__ import annotations

import copy

from conftest import absolutize, job_counts, load_repo_config, run_snakemake


def test_embedded_config_dry_run(tmp_path):
    """`make demo`'s whole job list (tests/workflow/test_sdf_e2e.py runs the SDF branches)."""
    proc = run_snakemake(tmp_path, absolutize(load_repo_config()), "-n")
    # Rollouts: baseline + 6 SDF branches (organism, noise, A1/B1 amp/sup) + 12 prompt
    # conditions (A1/B1 amp/sup x 3 strengths) + 4 steered (2 OOC vectors at -4/+4) + 2 random
    # controls at +4, each judged, + 3 raw-AdvBench conditions (baseline, two vectors at +4)
    # judged for compliance. Steering: 3 OOC splits x 2 concepts, one activation cache per pair
    # set (IC is off in the embedded config). The calibration's rollouts are added once
    # calibration_select (a checkpoint) has run.
    assert job_counts(proc.stdout + proc.stderr) == {
        "prepare_model": 1, "goals": 1, "generate_documents": 6, "sdf_dataset": 6,
        "train_lora": 6, "belief_check": 5, "rollouts": 28, "metrics": 25, "judge": 25,
        "metrics_table": 1, "sdf_profile": 1, "prompt_profile": 1, "calibration_select": 1,
        "calibration": 1, "profiles": 1, "figure_baseline": 1, "figure_sdf_profile": 1,
        "figure_profile_plane": 1, "figure_prompt_strength_ablation": 1,
        "figure_prompt_calibration": 1, "figure_judge_scores": 1, "all": 1,
        "ooc_pairs": 6, "activations": 6, "fit_vectors": 2, "random_vectors": 2,
        "steering_layers": 1, "judge_raw": 3, "steering_summary": 1, "raw_summary": 1,
        "steering_profile": 1, "token_cosines": 1, "sdf_alignment": 1,
        "figure_steering_diagnostics": 1, "figure_steering_ooc": 1,
        "figure_steering_random": 1, "figure_steering_raw": 1,
        "figure_token_heatmap_consequences": 1, "figure_token_heatmap_expectations": 1,
        "figure_sdf_steering_alignment": 1}
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_paper_config_dry_run_without_network(tmp_path):
    cfg = absolutize(load_repo_config("configs/paper.yaml"))
    proc = run_snakemake(tmp_path, cfg, "-n", timeout=120)
    out = proc.stdout + proc.stderr
    # 10 universes (organism, noise, 8 interventions); per open model 10 adapters, 9 belief
    # checks (noise has no belief), 35 rollout conditions (baseline + 10 SDF + 24 prompt);
    # Claude 3 Opus (hosted): baseline + 24 prompt conditions, no SDF. Every rollout table is
    # judged. The calibration conditions appear once calibration_select (a checkpoint) ran.
    # Steering (Appendix D, Llama-3.1-70B only): 4 fitted vectors x 6 multipliers, 20 random
    # controls (5 per OOC and IC vector) x 4 multipliers, all judged; 9 raw-AdvBench conditions
    # (baseline + 4 vectors x +-8) judged for compliance.
    assert job_counts(out) == {
        "advbench": 1, "goals": 1, "prepare_model": 4, "generate_documents": 10,
        "sdf_dataset": 40, "train_lora": 40, "belief_check": 36, "rollouts": 165 + 104 + 9,
        "metrics": 165 + 104, "judge": 165 + 104, "metrics_table": 5, "sdf_profile": 4,
        "prompt_profile": 5, "calibration_select": 4, "calibration": 4, "profiles": 1,
        "figure_baseline": 1, "figure_sdf_profile": 1, "figure_profile_plane": 1,
        "figure_prompt_strength_ablation": 1, "figure_prompt_calibration": 1,
        "figure_judge_scores": 1, "all": 1,
        "ooc_pairs": 6, "ic_pairs": 2, "activations": 8, "fit_vectors": 4,
        "random_vectors": 20, "steering_layers": 1, "judge_raw": 9, "steering_summary": 1,
        "raw_summary": 1, "steering_profile": 1, "token_cosines": 1, "sdf_alignment": 1,
        "figure_steering_diagnostics": 1, "figure_steering_ic": 1, "figure_steering_ooc": 1,
        "figure_steering_random": 1, "figure_steering_raw": 1,
        "figure_token_heatmap_consequences": 1, "figure_token_heatmap_expectations": 1,
        "figure_sdf_steering_alignment": 1,
    }
    assert "results/rollouts/llama-3.1-70b/steer-random_consequences_ic_5-x-8.parquet" in out
    assert "results/activations/llama-3.1-70b/ooc_expectations_keyword_hard" in out
    for model in ("llama-3.1-70b", "llama-3.1-405b", "qwen-2.5-72b", "qwq-32b"):
        assert f"results/rollouts/{model}/baseline.parquet" in out
        assert f"results/lora/{model}/B2_sup" in out
    assert "results/rollouts/claude-3-opus/prompt-B2_sup-strong.parquet" in out
    assert "results/lora/claude-3-opus" not in out and "models/claude-3-opus" not in out
    assert not (tmp_path / "resources").exists()  # nothing downloaded


def test_bad_config_fails_before_any_job(tmp_path):
    cfg = absolutize(load_repo_config())
    bad = copy.deepcopy(cfg)
    bad["rollouts"]["temperature"] = "hot"
    proc = run_snakemake(tmp_path, bad, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "rollouts.temperature" in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_figures_target_only_needs_metrics(tmp_path):
    proc = run_snakemake(tmp_path, absolutize(load_repo_config()), "-n", "figures")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["figure_baseline"] == 1 and "all" not in counts


def test_dot_test_configs_are_the_tiny_configs_and_run_by_hand(repo):
    """.test/*.yaml equal what tiny_config() builds (relative paths), and each dry-runs from the
    repository root as a user would type it."""
    import subprocess
    import sys

    import yaml
    from conftest import TEST_CONFIGS, tiny_config

    for name, kwargs in TEST_CONFIGS.items():
        path = repo / ".test" / name
        assert yaml.safe_load(path.read_text()) == tiny_config(absolute=False, **kwargs), (
            f"{path} is stale: regenerate it from tests/conftest.py:tiny_config")
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile",
                               str(path.relative_to(repo))], cwd=repo, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert job_counts(proc.stdout + proc.stderr).get("rollouts", 0) >= 1
