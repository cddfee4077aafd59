# judge: every rollout table's scratchpads scored on Direction A (researcher expectations)
# and Direction B (training / future consequences) with the rubric in resources/judge/, k
# samples per scratchpad. Changing judge.model or judge.rubric reruns these jobs and their
# downstream only; answers are cached (results/cache/llm), so a rerun asks nothing twice.


rule judge:
    wildcard_constraints:
        condition="(?!raw-)[A-Za-z0-9_.+@-]+",  # raw-AdvBench conditions: judge_raw
    input:
        unpack(judge_inputs),
        code=code_inputs("judge"),
    output:
        f"{RESULTS}/judge/{{model}}/{{condition}}.parquet",
    params:
        **judge_params(),
        subject=judge_subject,
    resources:
        gpu=model_gpus(JUDGE["model"]) if JUDGE["backend"] == "local" else 0,
        api=int(JUDGE["backend"] == "anthropic"),
    log:
        log_path("judge", "{model}/{condition}"),
    benchmark:
        bench_path("judge", "{model}/{condition}")
    conda:
        "../envs/ml.yaml"
    script:
        "../scripts/run.py"
