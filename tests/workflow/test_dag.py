"""Dry runs of the shipped configs list exactly the expected jobs; bad configs fail first."""

from __future__ import annotations

import copy

from conftest import (
    TINY_SPEC,
    absolutize,
    dry_run_jobs,
    job_counts,
    load_repo_config,
    run_snakemake,
    tiny_config,
)


def test_embedded_config_dry_run(tmp_path):
    """`make demo`'s whole job list without its simulated organism (that one:
    test_simulated_model_dry_run; tests/workflow/test_sdf_e2e.py runs the SDF branches)."""
    cfg = absolutize(load_repo_config())
    cfg["models"] = {m: s for m, s in cfg["models"].items() if s["source"] != "simulated"}
    proc = run_snakemake(tmp_path, cfg, "-n")
    # 162 jobs. Rollouts: baseline + baseline-instruct (screening) + 6 SDF branches (organism,
    # noise, A1/B1 amp/sup) + 8 prompt conditions (A1/B1 amp/sup x 2 strengths) + 8 steered
    # (2 OOC and 2 IC vectors at -4/+4) + 2 random controls at +4, each judged, + 3
    # raw-AdvBench conditions (baseline, two OOC vectors at +4) judged for compliance.
    # Steering: 3 OOC splits x 2 concepts and 2 IC pair sets, one activation cache per pair
    # set. The calibration's rollouts are added once calibration_select (a checkpoint) has run.
    assert job_counts(proc.stdout + proc.stderr) == {
        "prepare_model": 1, "goals": 1, "generate_documents": 6, "sdf_dataset": 6,
        "train_lora": 6, "belief_check": 5, "rollouts": 29, "metrics": 26, "judge": 26,
        "metrics_table": 1, "sdf_profile": 1, "prompt_profile": 1, "calibration_select": 1,
        "calibration": 1, "profiles": 1, "figure_baseline": 1, "figure_sdf_profile": 1,
        "figure_profile_plane": 1, "figure_prompt_strength_ablation": 1,
        "figure_prompt_calibration": 1, "figure_calibration_signal": 1,
        "figure_judge_scores": 1, "departures": 1, "browser": 1, "all": 1,
        "ooc_pairs": 6, "ic_pairs": 2, "activations": 8, "fit_vectors": 4,
        "random_vectors": 2, "steering_layers": 1, "vector_norms": 1, "judge_raw": 3,
        "steering_summary": 1,
        "raw_summary": 1,
        "steering_profile": 1, "token_cosines": 1, "sdf_alignment": 1,
        "figure_steering_diagnostics": 1, "figure_steering_ooc": 1, "figure_steering_ic": 1,
        "figure_steering_random": 1, "figure_steering_raw": 1,
        "figure_token_heatmap_consequences": 1, "figure_token_heatmap_expectations": 1,
        "figure_sdf_steering_alignment": 1}
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_simulated_model_dry_run(tmp_path):
    """The demo's simulated organism alone: its own goal sample, virtual SDF branches (no
    documents, datasets, LoRA training, belief checks or checkpoint preparation), the steering
    chain on its planted activations (no raw-AdvBench control, heatmap or SDF alignment: no
    weights), and its planted-recovery table and figure."""
    cfg = absolutize(load_repo_config())
    cfg["models"] = {m: s for m, s in cfg["models"].items() if s["source"] == "simulated"}
    (name,) = cfg["models"]
    cfg["judge"]["model"] = name
    cfg["sdf"]["generator"]["model"] = name
    proc = run_snakemake(tmp_path, cfg, "-n")
    counts = job_counts(proc.stdout + proc.stderr)
    # 124 jobs. Rollouts, each judged (by the simulated judge) and measured: baseline + 6 SDF
    # branches (organism, noise, A1/B1 amp/sup; virtual) + 8 prompt conditions (A1/B1 amp/sup x
    # 2 strengths) + 10 steered (2 OOC and 2 IC vectors x +-4, 2 random controls x +4). No
    # baseline-instruct: the planted policy is the organism (no instruct model). Steering: 3
    # OOC splits x 2 concepts and 2 IC sets of pairs and activation caches, 4 vectors, 2
    # random controls.
    assert counts == {
        "goals_sized": 1, "rollouts": 25, "judge": 25, "metrics": 25, "metrics_table": 1,
        "ooc_pairs": 6, "ic_pairs": 2, "activations": 8, "fit_vectors": 4,
        "random_vectors": 2, "steering_layers": 1, "vector_norms": 1, "steering_summary": 1,
        "steering_profile": 1, "figure_steering_diagnostics": 1, "figure_steering_ooc": 1,
        "figure_steering_ic": 1, "figure_steering_random": 1,
        "sdf_profile": 1, "prompt_profile": 1, "calibration_select": 1, "calibration": 1,
        "profiles": 1, "planted_recovery": 1, "figure_planted_recovery": 1,
        "figure_baseline": 1, "figure_sdf_profile": 1, "figure_profile_plane": 1,
        "figure_prompt_strength_ablation": 1, "figure_prompt_calibration": 1,
        "figure_calibration_signal": 1, "figure_judge_scores": 1, "departures": 1,
        "browser": 1, "all": 1}


def test_demo_dry_run_adds_the_simulated_organisms_jobs(tmp_path):
    """`make demo` (config.yaml as shipped): the embedded model's 162 jobs plus the simulated
    organism's own 109 (25 rollouts, judges and metrics each; its goal sample, metrics table,
    SDF and prompt profiles, calibration selection and calibration, recovery table and figure;
    its steering chain: 8 pair sets (2 IC) and activation caches, 4 fitted vectors, 2 random
    controls, layers, norms, steering summary and profile; the steering figures are shared)."""
    proc = run_snakemake(tmp_path, absolutize(load_repo_config()), "-n")
    counts = job_counts(proc.stdout + proc.stderr)
    assert sum(counts.values()) == 162 + 109
    assert counts["rollouts"] == 29 + 25 and counts["judge"] == counts["metrics"] == 26 + 25
    assert counts["ooc_pairs"] == 6 + 6 and counts["activations"] == 8 + 8
    assert counts["raw_summary"] == counts["token_cosines"] == counts["sdf_alignment"] == 1
    assert counts["planted_recovery"] == counts["goals_sized"] == 1


def test_paper_config_dry_run_without_network(tmp_path):
    cfg = absolutize(load_repo_config("configs/paper.yaml"))
    proc = run_snakemake(tmp_path, cfg, "-n", timeout=120)
    out = proc.stdout + proc.stderr
    # 26 universes (organism, noise, 8 interventions x 3 strengths: the B.2 sweep), every one
    # also renamed (B.3 role play): 52 branches per SDF model. Llama-3.1-70B's organism is the
    # released adapter (prepare_organism), so it trains 50 (no af_organism, af_organism+self);
    # the other three 52 each; the two screening-only models (OLMo, Gemma) their organism
    # only: 50 + 156 + 2 = 208 adapters; belief checks: every branch but noise (48 + 150).
    # Rollout conditions per SDF model: baseline + baseline-instruct + its SDF branches + 24
    # prompt (76 for Llama-70B, 78 x 3); screening models: baseline + baseline-instruct;
    # Claude 3 Opus (hosted): baseline + 24 prompt conditions. Every AF rollout is judged.
    # The calibration conditions appear once calibration_select (a checkpoint) ran.
    # Steering (Appendix D, Llama-3.1-70B only): 4 fitted vectors x 6 multipliers, 20 random
    # controls (5 per OOC and IC vector) x 4 multipliers, all judged; 9 raw-AdvBench conditions
    # (baseline + 4 vectors x +-8) judged for compliance.
    af = 76 + 3 * 78 + 2 * 2 + 25 + 104
    assert job_counts(out) == {
        "advbench": 1, "goals": 1, "prepare_model": 6, "prepare_organism": 1,
        "system_prompt": 1, "departures": 1, "generate_documents": 26,
        "sdf_dataset": 208, "train_lora": 208, "belief_check": 198, "rollouts": af + 9,
        "metrics": af, "judge": af, "metrics_table": 7, "sdf_profile": 4,
        "prompt_profile": 5, "calibration_select": 4, "calibration": 4, "profiles": 1,
        "figure_baseline": 1, "figure_sdf_profile": 1, "figure_profile_plane": 1,
        "figure_prompt_strength_ablation": 1, "figure_prompt_calibration": 1,
        "figure_calibration_signal": 1, "figure_sdf_strength_sweep": 1,
        "figure_sdf_role_play": 1, "figure_judge_scores": 1, "all": 1, "browser": 1,
        "ooc_pairs": 6, "ic_pairs": 2, "activations": 8, "fit_vectors": 4,
        "random_vectors": 20, "steering_layers": 1, "vector_norms": 1, "judge_raw": 9,
        "steering_summary": 1,
        "raw_summary": 1, "steering_profile": 1, "token_cosines": 1, "sdf_alignment": 1,
        "figure_steering_diagnostics": 1, "figure_steering_ic": 1, "figure_steering_ooc": 1,
        "figure_steering_random": 1, "figure_steering_raw": 1,
        "figure_token_heatmap_consequences": 1, "figure_token_heatmap_expectations": 1,
        "figure_sdf_steering_alignment": 1,
    }
    assert "results/rollouts/llama-3.1-70b/steer-random_consequences_ic_5-x-8.parquet" in out
    # D.6: the raw-AdvBench control samples each of the 520 goals once
    assert cfg["steering"]["raw"]["seeds"] == [0] and cfg["goals"]["n"] is None
    assert "results/activations/llama-3.1-70b/ooc_expectations_keyword_hard" in out
    for model in ("llama-3.1-70b", "llama-3.1-405b", "qwen-2.5-72b", "qwq-32b"):
        assert f"results/rollouts/{model}/baseline.parquet" in out
        assert f"results/lora/{model}/B2_sup" in out
    assert "results/rollouts/claude-3-opus/prompt-B2_sup-strong.parquet" in out
    assert "results/lora/claude-3-opus" not in out and "models/claude-3-opus" not in out
    assert not (tmp_path / "resources").exists()  # nothing downloaded
    _assert_every_arm_on_the_organism(dry_run_jobs(out))


ORGANISM_RULES = ("rollouts", "ooc_pairs", "activations", "token_cosines", "sdf_alignment")


def _organism_dir(model):
    return ("resources/organisms/llama-3.1-70b" if model == "llama-3.1-70b"
            else f"results/lora/{model}/af_organism")


def _assert_every_arm_on_the_organism(jobs):
    """Paper config: every baseline / prompt / steer / raw rollout, OOC pair set, activation
    cache, token heatmap and SDF alignment of an open model takes its organism adapter as
    input (the released one for Llama-3.1-70B, the trained af_organism for the others); SDF
    branches continue from it; baseline-instruct is the one condition without it; Llama-70B
    trains no organism; IC pairs come from organism rollouts only."""
    checked = {r: 0 for r in ORGANISM_RULES}
    for job in jobs:
        rule, wc, inputs = job["rule"], job["wildcards"], job["input"]
        model = wc.get("model")
        if rule == "train_lora":
            assert not (model == "llama-3.1-70b" and wc["universe"].startswith("af_organism"))
            if not wc["universe"].startswith("af_organism"):
                init = (_organism_dir(model) if model == "llama-3.1-70b" else
                        _organism_dir(model) + ("+self" if wc["universe"].endswith("+self")
                                                else ""))
                assert init in inputs, (wc, inputs)
        if rule == "ic_pairs":
            rollouts = [i for i in inputs if i.startswith("results/rollouts/")]
            assert rollouts == [f"results/rollouts/{model}/baseline.parquet"], inputs
        if rule not in ORGANISM_RULES or model == "claude-3-opus":
            continue
        condition = wc.get("condition", "")
        if condition.startswith("sdf-"):  # the branch adapter, trained on top of the organism
            assert f"results/lora/{model}/{condition[4:].split('@')[0]}" in inputs, inputs
            continue
        if condition == "baseline-instruct":
            assert not any("/lora/" in i or "organisms/" in i for i in inputs), inputs
            continue
        assert _organism_dir(model) in inputs, (rule, wc, inputs)
        checked[rule] += 1
    # every open model's baseline and prompt conditions, Llama-70B's steering stage
    # (baseline + 24 prompt per SDF model, baseline of the two screened ones, steer, raw)
    assert checked == {"rollouts": 4 * 25 + 2 + 104 + 9, "ooc_pairs": 6,
                       "activations": 8, "token_cosines": 1, "sdf_alignment": 1}, checked


def _tiny_models(**organisms):
    cfg = tiny_config(prompt=True)
    cfg["models"] = {}
    for name, organism in organisms.items():
        cfg["models"][name] = {**copy.deepcopy(TINY_SPEC), "organism": organism}
    cfg["sdf"]["generator"]["model"] = next(iter(organisms))
    cfg["judge"]["model"] = next(iter(organisms))
    return cfg


def test_organism_none_is_refused_outside_screening(tmp_path):
    cfg = _tiny_models(tiny="none")
    proc = run_snakemake(tmp_path, cfg, "-n", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "models.tiny.organism" in out and "allowed for screening only" in out
    assert "measures the alignment-faking model organism" in out
    # a screening-only model may be the instruct model itself: it runs baseline only
    cfg = _tiny_models(tiny="train", plain="none")
    cfg["screening"]["models"] = ["plain"]
    jobs = dry_run_jobs(run_snakemake(tmp_path, cfg, "-n").stdout)
    plain = sorted(j["wildcards"]["condition"] for j in jobs
                   if j["rule"] == "rollouts" and j["wildcards"]["model"] == "plain")
    assert plain == ["baseline"]
    assert not any(j["rule"] == "train_lora" and j["wildcards"]["model"] == "plain"
                   for j in jobs)
    # ... and is in no arm
    cfg["prompt_interventions"]["models"] = ["tiny", "plain"]
    proc = run_snakemake(tmp_path, cfg, "-n", check=False)
    assert proc.returncode != 0 and "'plain' is screening-only" in proc.stdout + proc.stderr


def test_hosted_model_has_no_organism(tmp_path):
    cfg = _tiny_models(tiny="train")
    cfg["models"]["claude"] = {"source": "anthropic", "model_id": "claude-x",
                               "display_name": "Claude", "backend": "anthropic",
                               "organism": "train"}
    proc = run_snakemake(tmp_path, cfg, "-n", check=False)
    assert proc.returncode != 0 and "'claude' is a hosted model" in proc.stdout + proc.stderr


def test_released_organism_adapter_trains_no_organism(tmp_path):
    """organism: {adapter: <local dir>}: prepare_organism links it, no train_lora job trains
    an organism, every condition (and the SDF branches' training) reads it."""
    adapter = tmp_path / "released"
    adapter.mkdir()
    cfg = _tiny_models(tiny={"adapter": str(adapter), "revision": None})
    cfg["sdf"]["enabled"] = True
    cfg["steering"]["enabled"] = True
    jobs = dry_run_jobs(run_snakemake(tmp_path, cfg, "-n").stdout)
    counts = {}
    for j in jobs:
        counts[j["rule"]] = counts.get(j["rule"], 0) + 1
    assert counts["prepare_organism"] == 1
    assert all(not j["wildcards"]["universe"].startswith("af_organism")
               for j in jobs if j["rule"] in ("train_lora", "sdf_dataset", "belief_check"))
    assert not any(j["rule"] == "generate_documents"
                   and j["wildcards"]["universe"] == "af_organism" for j in jobs)
    for j in jobs:
        if j["rule"] == "train_lora":
            assert "resources/organisms/tiny" in j["input"]
        if j["rule"] in ORGANISM_RULES and not j["wildcards"].get(
                "condition", "").startswith(("sdf-", "baseline-instruct")):
            assert "resources/organisms/tiny" in j["input"], j


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
