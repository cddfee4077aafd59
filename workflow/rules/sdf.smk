# Synthetic document fine-tuning: documents per universe -> packed dataset per (model, branch)
# -> one LoRA adapter per (model, branch) -> belief check. Rollouts of the condition
# sdf-<branch> use the adapter (rules/rollouts.smk); sdf_profile compares them with sdf-noise.

rule generate_documents:
    input:
        unpack(document_inputs),
        code=code_inputs("generate_documents"),
    output:
        documents=f"{RESULTS}/sdf/documents/{{universe}}.parquet",
        filters=f"{RESULTS}/sdf/documents/{{universe}}.filters.parquet",
        ledger=f"{RESULTS}/sdf/ledger/{{universe}}.parquet",
    wildcard_constraints:
        universe=r"(af_organism|noise|[AB][12]_(amp|sup)(-(weak|strong))?)",
    params:
        spec=document_params,
        hosted=hosted_settings(),
    resources:
        gpu=lambda wc: (config["models"][SDF_GEN["model"]]["gpus"]
                        if SDF_GEN["backend"] == "local" else 0),
        api=lambda wc: int(SDF_GEN["backend"] == "anthropic"),
    log:
        log_path("generate_documents", "{universe}"),
    benchmark:
        bench_path("generate_documents", "{universe}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


rule sdf_dataset:
    input:
        documents=lambda wc: f"{RESULTS}/sdf/documents/{SDF.universe_of(wc.universe)}.parquet",
        model="resources/models/{model}",
        code=code_inputs("sdf_dataset"),
    output:
        f"{RESULTS}/sdf/datasets/{{model}}/{{universe}}.parquet",
    params:
        dataset=config["sdf"]["dataset"],
        token_budget=lambda wc: SDF.token_budget(wc.universe),
        rename=lambda wc: SDF.rename(wc.universe, wc.model),
    log:
        log_path("sdf_dataset", "{model}/{universe}"),
    benchmark:
        bench_path("sdf_dataset", "{model}/{universe}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


rule train_lora:
    input:
        unpack(lora_inputs),
        code=code_inputs("train_lora"),
    output:
        directory(f"{RESULTS}/lora/{{model}}/{{universe}}"),
    params:
        lora=config["sdf"]["lora"],
        training=lambda wc: SDF.training(wc.model, wc.universe),
        device=lambda wc: config["models"][wc.model]["device"],
    resources:
        gpu=lambda wc: config["models"][wc.model]["gpus"],
        mem_mb=lambda wc: max(16000, 96000 * config["models"][wc.model]["gpus"]),
    log:
        log_path("train_lora", "{model}/{universe}"),
    benchmark:
        bench_path("train_lora", "{model}/{universe}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


rule belief_check:
    input:
        unpack(belief_inputs),
        code=code_inputs("belief_check"),
    output:
        f"{RESULTS}/sdf/belief/{{model}}/{{universe}}.parquet",
    params:
        model=model_runtime,
        rename=lambda wc: SDF.rename(wc.universe, wc.model),
    resources:
        gpu=lambda wc: config["models"][wc.model]["gpus"],
    log:
        log_path("belief_check", "{model}/{universe}"),
    benchmark:
        bench_path("belief_check", "{model}/{universe}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


rule sdf_profile:
    input:
        tables=lambda wc: expand(f"{RESULTS}/rollouts/{wc.model}/{{c}}.parquet",
                                 c=SDF.conditions(wc.model)),
        code=code_inputs("sdf_profile"),
    output:
        f"{RESULTS}/metrics/{{model}}/sdf_effects.parquet",
    params:
        bootstrap_samples=config["metrics"]["bootstrap_samples"],
        ci_level=config["metrics"]["ci_level"],
        seed=config["metrics"]["seed"],
    log:
        log_path("sdf_profile", "{model}"),
    benchmark:
        bench_path("sdf_profile", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"
