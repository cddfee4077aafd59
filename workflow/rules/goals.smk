# advbench: download the AdvBench CSV (only when goals.path is null), verified by sha256.
# goals: read, verify and deterministically sub-sample the goal file into a table.


rule advbench:
    input:
        code=code_inputs("advbench"),
    output:
        "resources/advbench/harmful_behaviors.csv",
    params:
        url=config["goals"]["url"],
        sha256=config["goals"]["sha256"],
    log:
        log_path("advbench"),
    benchmark:
        bench_path("advbench")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule goals:
    input:
        goals=goals_source(),
        code=code_inputs("goals"),
    output:
        f"{RESULTS}/goals/goals.parquet",
    params:
        sha256=config["goals"]["sha256"],
        n=config["goals"]["n"],
        seed=config["goals"]["seed"],
    log:
        log_path("goals"),
    benchmark:
        bench_path("goals")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


# A simulated model may ask for more goals than the run's sample (models.<m>.goals_n): the
# same file, verified and sub-sampled the same way, to n goals. Simulated rollouts are cheap,
# and informative CIs need enough goals (the bootstrap resamples goals).
rule goals_sized:
    input:
        goals=goals_source(),
        code=code_inputs("goals_sized"),
    output:
        f"{RESULTS}/goals/goals_n{{n}}.parquet",
    wildcard_constraints:
        n=r"\d+",
    params:
        sha256=config["goals"]["sha256"],
        n=lambda wc: int(wc.n),
        seed=config["goals"]["seed"],
    log:
        log_path("goals_sized", "n{n}"),
    benchmark:
        bench_path("goals_sized", "n{n}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"
