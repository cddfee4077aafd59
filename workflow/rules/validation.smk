# Known-answer validation: for every simulated model (source simulated, a planted policy in
# resources/simulated/), each quantity the DAG estimated beside the value its policy implies,
# with CI, `covered` and the distance in standard errors (metrics/recovery.py).


def recovery_inputs(wildcards):
    m = wildcards.model
    inputs = {"policy": config["models"][m]["policy"],
              "metrics": f"{RESULTS}/metrics/{m}/conditions.parquet",
              "judged": [f"{RESULTS}/judge/{m}/{c}.parquet" for c in conditions_for(m)
                         if parse_steer_condition(c) is None],
              "effects": ([f"{RESULTS}/metrics/{m}/sdf_effects.parquet"] if m in SDF.models
                          else [])
              + ([f"{RESULTS}/metrics/{m}/prompt_effects.parquet"] if m in PROMPT.models
                 else [])}
    if m in PROMPT.calibration_models:
        inputs["selection"] = f"{RESULTS}/calibration/{m}/selection.parquet"
        inputs["calibration"] = f"{RESULTS}/calibration/{m}/calibration.parquet"
    if m in STEER.models:  # the steering chain: slopes, random controls, vectors, layers
        randoms = [c for c in STEER.steer_conditions(m)
                   if parse_steer_condition(c).vector.kind == "random"]
        inputs["steering_effects"] = f"{RESULTS}/metrics/{m}/steering_effects.parquet"
        inputs["steered"] = [f"{RESULTS}/rollouts/{m}/{c}.parquet" for c in ["baseline", *randoms]]
        inputs["vectors"] = all_vector_files(m)
        inputs["layers"] = f"{RESULTS}/vectors/{m}/layers.parquet"
    return inputs


def steering_layer_count():
    """How many layers steering_layers chooses (planted_recovery compares them with the k
    layers of highest planted strength)."""
    layers = STEERING["layers"]
    return layers["k"] if layers["select"] == "top_k" else len(layers["list"] or [])


rule planted_recovery:
    input:
        unpack(recovery_inputs),
        code=code_inputs("planted_recovery"),
    output:
        f"{RESULTS}/validation/{{model}}/planted_recovery.parquet",
    params:
        calibration={k: config["calibration"][k] for k in (
            "reference", "signal", "tolerance", "max_per_family", "strengths")}
        | {"candidates": PROMPT.candidates()},
        layer_count=steering_layer_count(),
        bootstrap_samples=config["metrics"]["bootstrap_samples"],
        ci_level=config["metrics"]["ci_level"],
        seed=config["metrics"]["seed"],
    log:
        log_path("planted_recovery", "{model}"),
    benchmark:
        bench_path("planted_recovery", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule figure_planted_recovery:
    input:
        tables=validation_tables(),
        code=code_inputs("figure_planted_recovery"),
    output:
        report(
            expand(f"{RESULTS}/figures/planted_recovery.{{ext}}", ext=FIGURE_FORMATS),
            caption="../report/planted_recovery.rst",
            category="Validation",
        ),
    params:
        kind="planted_recovery",
        display_names=MODEL_DISPLAY_NAMES,
        dpi=config["figures"]["dpi"],
    log:
        log_path("figure_planted_recovery"),
    benchmark:
        bench_path("figure_planted_recovery")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"
