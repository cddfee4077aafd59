# Figures: drawn from metrics tables only, so `snakemake figures` redraws them from cached
# results with no model, GPU or API key.


rule figure_baseline:
    input:
        tables=baseline_metrics_tables(),
        code=package_code("figures.py"),
    output:
        report(
            expand(f"{RESULTS}/figures/baseline_compliance.{{ext}}", ext=FIGURE_FORMATS),
            caption="../report/baseline_compliance.rst",
            category="Baseline",
        ),
    params:
        display_names={m: spec["display_name"] for m, spec in config["models"].items()},
        dpi=config["figures"]["dpi"],
    log:
        log_path("figure_baseline"),
    benchmark:
        bench_path("figure_baseline")
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/figure_baseline.py"


rule figure_sdf_profile:
    input:
        tables=sdf_effect_tables(),
        code=package_code("figures.py"),
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
        "../workflow_scripts/figure_sdf.py"


rule figure_sdf_strength_sweep:
    input:
        tables=sdf_effect_tables(),
        code=package_code("figures.py"),
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
        "../workflow_scripts/figure_sdf.py"


rule figure_sdf_role_play:
    input:
        tables=sdf_effect_tables(),
        code=package_code("figures.py"),
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
        "../workflow_scripts/figure_sdf.py"
