# rollouts: the alignment-faking evaluation of one model under one condition, both tiers,
# every seed; one row per (goal, tier, seed). sdf-<branch> conditions load that branch's
# LoRA adapter (rules/sdf.smk).


rule rollouts:
    input:
        unpack(rollout_inputs),
        model="resources/models/{model}",
        goals=f"{RESULTS}/goals/goals.parquet",
        system=config["prompts"]["system"],
        user_template=config["prompts"]["user_template"],
        code=package_code("generation.py", "data.py", "evaluation/rollouts.py",
                          "evaluation/parsing.py"),
    output:
        f"{RESULTS}/rollouts/{{model}}/{{condition}}.parquet",
    params:
        model=model_runtime,
        generation=rollout_params,
        prompts=config["prompts"],
        condition=condition_params,
    resources:
        gpu=lambda wc: config["models"][wc.model]["gpus"],
        mem_mb=lambda wc: max(16000, 64000 * config["models"][wc.model]["gpus"]),
    log:
        log_path("rollouts", "{model}/{condition}"),
    benchmark:
        bench_path("rollouts", "{model}/{condition}")
    conda:
        "../envs/ml.yaml"
    script:
        "../workflow_scripts/rollouts.py"
