# metrics: per model, compliance rates per tier and the paired gap with CIs per condition.


rule metrics:
    input:
        tables=expand(f"{RESULTS}/rollouts/{{{{model}}}}/{{condition}}.parquet", condition=CONDITIONS),
        code=package_code("evaluation/metrics.py"),
    output:
        f"{RESULTS}/metrics/{{model}}/conditions.parquet",
    params:
        bootstrap_samples=config["metrics"]["bootstrap_samples"],
        ci_level=config["metrics"]["ci_level"],
        seed=config["metrics"]["seed"],
    log:
        log_path("metrics", "{model}"),
    benchmark:
        bench_path("metrics", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/metrics.py"
