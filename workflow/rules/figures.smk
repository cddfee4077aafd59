# Figures: drawn from metrics tables only, so `snakemake figures` redraws them from cached
# results with no model, GPU or API key.


rule figure_baseline:
    input:
        tables=baseline_metrics_tables(),
        code=code_inputs("figure_baseline"),
    output:
        report(
            expand(f"{RESULTS}/figures/baseline_compliance.{{ext}}", ext=FIGURE_FORMATS),
            caption="../report/baseline_compliance.rst",
            category="Baseline",
        ),
    params:
        kind="baseline_compliance",
        display_names={m: spec["display_name"] for m, spec in config["models"].items()},
        organisms={m: o.label for m, o in ORGANISMS.items()
                   if o.kind not in ("hosted", "simulated")},
        dpi=config["figures"]["dpi"],
    log:
        log_path("figure_baseline"),
    benchmark:
        bench_path("figure_baseline")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule figure_sdf_profile:
    input:
        tables=sdf_effect_tables(),
        rates=sdf_rate_tables(),
        code=code_inputs("figure_sdf_profile"),
    output:
        report(
            expand(f"{RESULTS}/figures/sdf_profile.{{ext}}", ext=FIGURE_FORMATS),
            caption="../report/sdf_profile.rst",
            category="SDF",
        ),
    params:
        display_names={m: spec["display_name"] for m, spec in config["models"].items()},
        dpi=config["figures"]["dpi"],
        kind="sdf_profile",
    log:
        log_path("figure_sdf_profile"),
    benchmark:
        bench_path("figure_sdf_profile")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule figure_sdf_strength_sweep:
    input:
        tables=sdf_effect_tables(),
        code=code_inputs("figure_sdf_strength_sweep"),
    output:
        report(
            expand(f"{RESULTS}/figures/sdf_strength_sweep.{{ext}}", ext=FIGURE_FORMATS),
            caption="../report/sdf_strength_sweep.rst",
            category="SDF",
        ),
    params:
        display_names={m: spec["display_name"] for m, spec in config["models"].items()},
        dpi=config["figures"]["dpi"],
        kind="sdf_strength_sweep",
    log:
        log_path("figure_sdf_strength_sweep"),
    benchmark:
        bench_path("figure_sdf_strength_sweep")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule figure_sdf_role_play:
    input:
        tables=sdf_effect_tables(),
        code=code_inputs("figure_sdf_role_play"),
    output:
        report(
            expand(f"{RESULTS}/figures/sdf_role_play.{{ext}}", ext=FIGURE_FORMATS),
            caption="../report/sdf_role_play.rst",
            category="SDF",
        ),
    params:
        display_names={m: spec["display_name"] for m, spec in config["models"].items()},
        dpi=config["figures"]["dpi"],
        kind="sdf_role_play",
    log:
        log_path("figure_sdf_role_play"),
    benchmark:
        bench_path("figure_sdf_role_play")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


# Figures 5a, 5b, 9 and the judge's score distributions. One rule per figure, all drawn by
# motivation_profiles.pipeline.figures -> figures.<module>.<params.kind> from the
# concatenated input tables.
FIGURE_PARAMS = dict(
    display_names={m: spec["display_name"] for m, spec in config["models"].items()},
    dpi=config["figures"]["dpi"],
)


rule figure_profile_plane:
    input:
        tables=[f"{RESULTS}/metrics/profiles.parquet"],
        code=code_inputs("figure_profile_plane"),
    output:
        report(expand(f"{RESULTS}/figures/profile_plane.{{ext}}", ext=FIGURE_FORMATS),
               caption="../report/profile_plane.rst", category="Profiles"),
    params:
        kind="profile_plane",
        **FIGURE_PARAMS,
    log:
        log_path("figure_profile_plane"),
    benchmark:
        bench_path("figure_profile_plane")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule figure_prompt_strength_ablation:
    input:
        tables=prompt_effect_tables(),
        code=code_inputs("figure_prompt_strength_ablation"),
    output:
        report(expand(f"{RESULTS}/figures/prompt_strength_ablation.{{ext}}",
                      ext=FIGURE_FORMATS),
               caption="../report/prompt_strength_ablation.rst", category="Profiles"),
    params:
        kind="prompt_strength_ablation",
        **FIGURE_PARAMS,
    log:
        log_path("figure_prompt_strength_ablation"),
    benchmark:
        bench_path("figure_prompt_strength_ablation")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule figure_prompt_calibration:
    input:
        tables=calibration_tables(),
        code=code_inputs("figure_prompt_calibration"),
    output:
        report(expand(f"{RESULTS}/figures/prompt_calibration.{{ext}}", ext=FIGURE_FORMATS),
               caption="../report/prompt_calibration.rst", category="Profiles"),
    params:
        kind="prompt_calibration",
        **FIGURE_PARAMS,
    log:
        log_path("figure_prompt_calibration"),
    benchmark:
        bench_path("figure_prompt_calibration")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule figure_calibration_signal:
    input:
        tables=calibration_selection_tables(),
        code=code_inputs("figure_calibration_signal"),
    output:
        report(expand(f"{RESULTS}/figures/calibration_signal.{{ext}}", ext=FIGURE_FORMATS),
               caption="../report/calibration_signal.rst", category="Profiles"),
    params:
        kind="calibration_signal",
        **FIGURE_PARAMS,
    log:
        log_path("figure_calibration_signal"),
    benchmark:
        bench_path("figure_calibration_signal")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule figure_judge_scores:
    input:
        tables=judge_tables(steer=False),
        more=calibration_judge_tables,
        code=code_inputs("figure_judge_scores"),
    output:
        report(expand(f"{RESULTS}/figures/judge_scores.{{ext}}", ext=FIGURE_FORMATS),
               caption="../report/judge_scores.rst", category="Judge"),
    params:
        kind="judge_scores",
        **FIGURE_PARAMS,
    log:
        log_path("figure_judge_scores"),
    benchmark:
        bench_path("figure_judge_scores")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"
