# metrics: compliance rates per tier and the paired gap with CIs, one small table per
# (model, condition), gathered into one table per model. Per-condition jobs keep a change to
# one condition from recomputing (or redrawing) anything that depends only on others.


rule metrics:
    input:
        table=f"{RESULTS}/rollouts/{{model}}/{{condition}}.parquet",
        code=code_inputs("metrics"),
    output:
        f"{RESULTS}/metrics/{{model}}/by_condition/{{condition}}.parquet",
    params:
        bootstrap_samples=config["metrics"]["bootstrap_samples"],
        ci_level=config["metrics"]["ci_level"],
        seed=config["metrics"]["seed"],
    log:
        log_path("metrics", "{model}/{condition}"),
    benchmark:
        bench_path("metrics", "{model}/{condition}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule metrics_table:
    input:
        code=code_inputs("metrics_table"),
        tables=lambda wc: expand(f"{RESULTS}/metrics/{wc.model}/by_condition/{{c}}.parquet",
                                 c=conditions_for(wc.model)),
    output:
        f"{RESULTS}/metrics/{{model}}/conditions.parquet",
    log:
        log_path("metrics_table", "{model}"),
    benchmark:
        bench_path("metrics_table", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"
