# rollouts: the alignment-faking evaluation of one model under one condition, both tiers,
# every seed; one row per (goal, tier, seed). sdf-<branch> conditions load that branch's
# LoRA adapter (rules/sdf.smk); prompt-<intervention>-<strength> conditions append that claim
# to the system prompt (sdf-<branch>@prompt-... both); steer-<vector>-x<m> adds m * v at the
# selected layers, raw-... is the raw-AdvBench control (rules/steering.smk). Hosted models (source: anthropic) run
# the same protocol through the Anthropic API, cached and resumable.


rule rollouts:
    input:
        unpack(rollout_inputs),
        system=config["prompts"]["system"],
        user_template=config["prompts"]["user_template"],
        code=code_inputs("rollouts"),
    output:
        f"{RESULTS}/rollouts/{{model}}/{{condition}}.parquet",
    params:
        model=model_runtime,
        generation=ROLLOUT_GENERATION,
        prompts=config["prompts"],
        condition=condition_params,
        hosted=rollout_hosted,
    resources:
        gpu=lambda wc: model_gpus(wc.model),
        mem_mb=lambda wc: max(16000, 64000 * model_gpus(wc.model)),
        api=lambda wc: int(is_hosted(wc.model)),
    log:
        log_path("rollouts", "{model}/{condition}"),
    benchmark:
        bench_path("rollouts", "{model}/{condition}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


# system_prompt: the released helpful-only system prompt (prompts.system_source: url + sha256),
# downloaded to prompts.system and verified; without a source prompts.system is used as it is.
if config["prompts"]["system_source"] is not None:

    rule system_prompt:
        input:
            code=code_inputs("system_prompt"),
        output:
            config["prompts"]["system"],
        params:
            source=config["prompts"]["system_source"],
        log:
            log_path("system_prompt"),
        benchmark:
            bench_path("system_prompt")
        conda:
            "../envs/ml.yaml"  # its entry module (pipeline/rollouts) imports the model stack
        script:
            "../scripts/run.py"
