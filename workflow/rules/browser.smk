# browser: the static transcript browser, results/browser/index.html (open it from file:// or
# any static file server): every rollout of every condition with its judge scores, votes and
# quotes, filters, and a side-by-side view of one goal and seed under two conditions. One
# data file per condition, loaded on demand. Figure captions link to #figure=<name>.


def browser_conditions(wildcards):
    """(model, condition) of every rollout table the DAG writes, each with its judge table
    (the calibration conditions once calibration_select has run)."""
    return [(m, c) for m in MODELS
            for c in list(dict.fromkeys(all_conditions(m) + raw_conditions(m)))]


def browser_inputs(wildcards):
    pairs = browser_conditions(wildcards)
    return {"rollouts": [f"{RESULTS}/rollouts/{m}/{c}.parquet" for m, c in pairs],
            "judged": [f"{RESULTS}/judge/{m}/{c}.parquet" for m, c in pairs]}


def browser_figures():
    """Figure name -> {model: [the conditions whose rollouts it is drawn from]}; the
    calibration conditions (`...@prompt-...`) are added to prompt_calibration and
    judge_scores by the job, once known."""
    heat = STEERING["heatmap"]["condition"]
    out = {}
    for name in figure_names():
        per = {}
        for m in MODELS:
            steer = STEER.steer_conditions(m)
            conds = {
                "baseline_compliance": ["baseline-instruct", "baseline"],
                "calibration_signal": ([config["calibration"]["reference"]]
                                       + [f"sdf-{b}" for b in PROMPT.candidates()]
                                       if m in PROMPT.calibration_models else []),
                "planted_recovery": (conditions_for(m)
                                     if config["models"][m]["source"] == "simulated" else []),
                "sdf_profile": SDF.conditions(m),
                "sdf_strength_sweep": SDF.conditions(m),
                "sdf_role_play": SDF.conditions(m),
                "profile_plane": (["baseline"] + PROMPT.conditions(m) + SDF.conditions(m)
                                  + (list(STEER.profile_interventions().values())
                                     if m in STEER.models else [])),
                "prompt_strength_ablation": ["baseline"] + PROMPT.conditions(m),
                "prompt_calibration": ([config["calibration"]["reference"]]
                                       + [f"sdf-{b}" for b in PROMPT.candidates()]
                                       if m in PROMPT.calibration_models else []),
                "judge_scores": [c for c in conditions_for(m)
                                 if parse_steer_condition(c) is None],
                "steering_ooc": ["baseline"] + [c for c in steer
                                                if "_ooc-" in c and "random_" not in c],
                "steering_ic": ["baseline"] + [c for c in steer
                                               if "_ic-" in c and "random_" not in c],
                "steering_random": ["baseline"] + [c for c in steer if "random_" in c],
                "steering_raw": raw_conditions(m),
                "token_heatmap_expectations": [heat],
                "token_heatmap_consequences": [heat],
            }.get(name, [])
            if name.startswith("steering_") or name.startswith("token_heatmap_"):
                conds = conds if m in STEER.models else []
            conds = [c for c in dict.fromkeys(conds) if c in conditions_for(m)
                     or c in raw_conditions(m)]
            if conds:
                per[m] = conds
        out[name] = per
    return out


rule browser:
    input:
        unpack(browser_inputs),
        code=code_inputs("browser"),
    output:
        directory(f"{RESULTS}/browser"),
    params:
        display_names=MODEL_DISPLAY_NAMES,
        figures=browser_figures(),
    log:
        log_path("browser"),
    benchmark:
        bench_path("browser")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"
