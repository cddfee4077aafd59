# Figures: drawn from metrics tables only, so `snakemake figures` redraws them from cached
# results with no model, GPU or API key.


rule figure_baseline:
    input:
        tables=metrics_tables(),
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
