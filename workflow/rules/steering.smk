# Activation steering (paper sections 2.4 / 3.2, Appendix D): contrastive pairs -> pooled
# activation caches -> per-layer directions with diagnostics -> norm-matched random controls ->
# one layer set per model -> steered AF rollouts (the `rollouts` rule runs steer-{vector}-x{m}
# and raw-... conditions; rules/rollouts.smk) -> judge decomposition, summaries and figures.
# All logic is in the package; every rule runs its function of the same name in
# motivation_profiles.pipeline.steering (figures: motivation_profiles.pipeline.figures).


wildcard_constraints:
    concept="expectations|consequences",
    source="ooc|ic",
    split="train|validation|keyword_hard",
    pairset="ooc_(expectations|consequences)_(train|validation|keyword_hard)|ic_(expectations|consequences)",
    k=r"\d+",


rule ooc_pairs:
    input:
        unpack(ooc_inputs),
        code=code_inputs("ooc_pairs"),
    output:
        pairs=f"{RESULTS}/pairs/{{model}}/ooc_{{concept}}_{{split}}.parquet",
        rejections=f"{RESULTS}/pairs/{{model}}/ooc_{{concept}}_{{split}}.rejections.parquet",
    params:
        ooc=ooc_settings,
        external=lambda wc: external_pairs(wc, f"ooc_{wc.concept}_{wc.split}") is not None,
        model=model_runtime,
        hosted=hosted_settings(),
    resources:
        gpu=wildcard_gpus,
        mem_mb=wildcard_gpu_mem_mb,
    log:
        log_path("ooc_pairs", "{model}/{concept}_{split}"),
    benchmark:
        bench_path("ooc_pairs", "{model}/{concept}_{split}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


rule ic_pairs:
    input:
        unpack(lambda wc: ic_sources(wc.model, wc.concept)),
        system=config["prompts"]["system"],
        user_template=config["prompts"]["user_template"],
        code=code_inputs("ic_pairs"),
    output:
        pairs=f"{RESULTS}/pairs/{{model}}/ic_{{concept}}.parquet",
        report=f"{RESULTS}/pairs/{{model}}/ic_{{concept}}.report.parquet",
    params:
        ic=ic_settings,
        external=lambda wc: external_pairs(wc, f"ic_{wc.concept}") is not None,
        prompts=config["prompts"],
    log:
        log_path("ic_pairs", "{model}/{concept}"),
    benchmark:
        bench_path("ic_pairs", "{model}/{concept}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule activations:
    input:
        unpack(organism_inputs),
        pairs=f"{RESULTS}/pairs/{{model}}/{{pairset}}.parquet",
        model=model_files,
        code=code_inputs("activations"),
    output:
        directory(f"{RESULTS}/activations/{{model}}/{{pairset}}"),
    params:
        extraction=STEERING["extraction"],
        model=model_runtime,
    resources:
        gpu=wildcard_gpus,
        mem_mb=wildcard_gpu_mem_mb,
    log:
        log_path("activations", "{model}/{pairset}"),
    benchmark:
        bench_path("activations", "{model}/{pairset}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


rule fit_vectors:
    input:
        unpack(fit_inputs),
        code=code_inputs("fit_vectors"),
    output:
        vectors=f"{RESULTS}/vectors/{{model}}/{{concept}}_{{source}}.safetensors",
        diagnostics=f"{RESULTS}/vectors/{{model}}/{{concept}}_{{source}}.diagnostics.parquet",
    params:
        fitting=STEERING["fitting"],
        pooling=STEERING["extraction"]["pooling"],
    log:
        log_path("fit_vectors", "{model}/{concept}_{source}"),
    benchmark:
        bench_path("fit_vectors", "{model}/{concept}_{source}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule random_vectors:
    input:
        real=f"{RESULTS}/vectors/{{model}}/{{concept}}_{{source}}.safetensors",
        activations=validation_activations,
        code=code_inputs("random_vectors"),
    output:
        vectors=f"{RESULTS}/vectors/{{model}}/random/{{concept}}_{{source}}_{{k}}.safetensors",
        diagnostics=f"{RESULTS}/vectors/{{model}}/random/{{concept}}_{{source}}_{{k}}.diagnostics.parquet",
    params:
        seed=STEERING["random"]["seed"],
        pooling=STEERING["extraction"]["pooling"],
    log:
        log_path("random_vectors", "{model}/{concept}_{source}_{k}"),
    benchmark:
        bench_path("random_vectors", "{model}/{concept}_{source}_{k}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule vector_norms:
    input:
        vectors=lambda wc: all_vector_files(wc.model),
        layers=f"{RESULTS}/vectors/{{model}}/layers.parquet",
        code=code_inputs("vector_norms"),
    output:
        f"{RESULTS}/vectors/{{model}}/norms.parquet",
    log:
        log_path("vector_norms", "{model}"),
    benchmark:
        bench_path("vector_norms", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule steering_layers:
    input:
        diagnostics=layer_diagnostics,
        code=code_inputs("steering_layers"),
    output:
        f"{RESULTS}/vectors/{{model}}/layers.parquet",
    params:
        layers=STEERING["layers"],
    log:
        log_path("steering_layers", "{model}"),
    benchmark:
        bench_path("steering_layers", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule judge_raw:
    input:
        table=f"{RESULTS}/rollouts/{{model}}/raw-{{rawcond}}.parquet",
        rubric=STEERING["raw"]["rubric"],
        model=[f"resources/models/{JUDGE['model']}"] if JUDGE["backend"] == "local" else [],
        code=code_inputs("judge_raw"),
    output:
        f"{RESULTS}/judge/{{model}}/raw-{{rawcond}}.parquet",
    params:
        **judge_params(),
    resources:
        gpu=model_gpus(JUDGE["model"]) if JUDGE["backend"] == "local" else 0,
        api=int(JUDGE["backend"] == "anthropic"),
    log:
        log_path("judge_raw", "{model}/raw-{rawcond}"),
    benchmark:
        bench_path("judge_raw", "{model}/raw-{rawcond}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


rule steering_summary:
    input:
        unpack(steering_summary_inputs),
        code=code_inputs("steering_summary"),
    output:
        f"{RESULTS}/steering/{{model}}/summary.parquet",
    params:
        high=STEERING["ic"]["high"],
    log:
        log_path("steering_summary", "{model}"),
    benchmark:
        bench_path("steering_summary", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule raw_summary:
    input:
        judged=lambda wc: [f"{RESULTS}/judge/{wc.model}/{c}.parquet"
                           for c in raw_conditions(wc.model)],
        code=code_inputs("raw_summary"),
    output:
        f"{RESULTS}/steering/{{model}}/raw.parquet",
    params:
        ci_level=config["metrics"]["ci_level"],
    log:
        log_path("raw_summary", "{model}"),
    benchmark:
        bench_path("raw_summary", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule steering_profile:
    input:
        tables=lambda wc: expand(f"{RESULTS}/rollouts/{wc.model}/{{c}}.parquet",
                                 c=["baseline", *STEER.profile_interventions().values()]),
        code=code_inputs("steering_profile"),
    output:
        f"{RESULTS}/metrics/{{model}}/steering_effects.parquet",
    params:
        interventions=STEER.profile_interventions(),
        source=STEERING["profile"]["source"],
        multiplier=STEERING["profile"]["multiplier"],
        **METRICS_PARAMS,
    log:
        log_path("steering_profile", "{model}"),
    benchmark:
        bench_path("steering_profile", "{model}")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"


rule token_cosines:
    input:
        unpack(organism_inputs),
        model="resources/models/{model}",
        rollouts=f"{RESULTS}/rollouts/{{model}}/{STEERING['heatmap']['condition']}.parquet",
        vectors=lambda wc: all_vector_files(wc.model),
        diagnostics=lambda wc: [f"{RESULTS}/vectors/{wc.model}/{v}.diagnostics.parquet"
                                for v in STEER.fitted_vectors()],
        code=code_inputs("token_cosines"),
    output:
        f"{RESULTS}/steering/{{model}}/token_cosines.parquet",
    params:
        heatmap=STEERING["heatmap"],
        layers=STEERING["layers"],
        model=model_runtime,
    resources:
        gpu=wildcard_gpus,
        mem_mb=wildcard_gpu_mem_mb,
    log:
        log_path("token_cosines", "{model}"),
    benchmark:
        bench_path("token_cosines", "{model}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


rule sdf_alignment:
    input:
        model="resources/models/{model}",
        organism=lambda wc: organism_adapter(wc.model),
        branches=lambda wc: [f"{RESULTS}/lora/{wc.model}/{b}" for b in SDF.branches_of(wc.model)
                             if SDF.init_dir(wc.model, b, RESULTS) == organism_adapter(wc.model)],
        vectors=lambda wc: [f"{RESULTS}/vectors/{wc.model}/{v}.safetensors"
                            for v in STEER.fitted_vectors()],
        texts=os.path.join(STEERING["materials_dir"], "neutral_texts.txt"),
        code=code_inputs("sdf_alignment"),
    output:
        f"{RESULTS}/steering/{{model}}/sdf_alignment.parquet",
    params:
        alignment=STEERING["sdf_alignment"],
        model=model_runtime,
    resources:
        gpu=wildcard_gpus,
        mem_mb=wildcard_gpu_mem_mb,
    log:
        log_path("sdf_alignment", "{model}"),
    benchmark:
        bench_path("sdf_alignment", "{model}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


# ----------------------------------------------------------------------------- figures


for _name in STEER.figures(SDF.models):

    rule:
        name:
            f"figure_{_name}"
        input:
            tables=steering_figure_inputs(_name),
            norms=vector_norm_tables(),
            code=code_inputs(f"figure_{_name}"),
        output:
            report(expand(f"{RESULTS}/figures/{_name}.{{ext}}", ext=FIGURE_FORMATS),
                   caption=f"../report/{_name}.rst", category="Steering"),
        params:
            kind=_name,
            display_names=MODEL_DISPLAY_NAMES,
            dpi=config["figures"]["dpi"],
        log:
            log_path(f"figure_{_name}"),
        benchmark:
            bench_path(f"figure_{_name}")
        conda:
            "../envs/analysis.yaml"
        script:
            "../scripts/run.py"
