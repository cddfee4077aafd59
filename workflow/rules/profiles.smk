# Prompt-intervention effects, the Appendix C.1 calibration on SDF checkpoints, and the
# comparative motivation profiles (S_A, S_B per model x method) in one table.

METRICS_PARAMS = dict(bootstrap_samples=config["metrics"]["bootstrap_samples"],
                      ci_level=config["metrics"]["ci_level"], seed=config["metrics"]["seed"])


rule prompt_profile:
    input:
        tables=lambda wc: expand(f"{RESULTS}/rollouts/{wc.model}/{{c}}.parquet",
                                 c=["baseline"] + PROMPT.conditions(wc.model)),
        code=code_inputs("prompt_profile"),
    output:
        f"{RESULTS}/metrics/{{model}}/prompt_effects.parquet",
    params:
        interventions=PROMPT.interventions,
        strengths=PROMPT.strengths,
        **METRICS_PARAMS,
    log:
        log_path("prompt_profile", "{model}"),
    benchmark:
        bench_path("prompt_profile", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


checkpoint calibration_select:
    input:
        tables=lambda wc: expand(f"{RESULTS}/metrics/{wc.model}/by_condition/{{c}}.parquet",
                                 c=[config["calibration"]["reference"]]
                                 + [f"sdf-{b}" for b in PROMPT.candidates()]),
        code=code_inputs("calibration_select"),
    output:
        f"{RESULTS}/calibration/{{model}}/selection.parquet",
    params:
        reference=config["calibration"]["reference"],
        candidates=PROMPT.candidates(),
        signal=config["calibration"]["signal"],
        max_per_family=config["calibration"]["max_per_family"],
        tolerance=config["calibration"].get("tolerance", "ci_overlap"),
    log:
        log_path("calibration_select", "{model}"),
    benchmark:
        bench_path("calibration_select", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule calibration:
    input:
        selection=f"{RESULTS}/calibration/{{model}}/selection.parquet",
        tables=lambda wc: expand(f"{RESULTS}/rollouts/{wc.model}/{{c}}.parquet",
                                 c=calibration_condition_list(wc.model)),
        code=code_inputs("calibration"),
    output:
        f"{RESULTS}/calibration/{{model}}/calibration.parquet",
    params:
        interventions=PROMPT.interventions,
        strengths=config["calibration"]["strengths"],
        signal=config["calibration"]["signal"],
        **METRICS_PARAMS,
    log:
        log_path("calibration", "{model}"),
    benchmark:
        bench_path("calibration", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule profiles:
    input:
        tables=profile_tables(),
        code=code_inputs("profiles"),
    output:
        f"{RESULTS}/metrics/profiles.parquet",
    params:
        display_names={m: spec["display_name"] for m, spec in config["models"].items()},
    log:
        log_path("profiles"),
    benchmark:
        bench_path("profiles")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"
