# departures: the report's "Choices not in the paper" section, rendered from the config itself
# (its `departures` list and the stand-ins its values reveal: motivation_profiles.config.departures).

from motivation_profiles.config.departures import departure_table

DEPARTURES = [f"{RESULTS}/report/departures.html", f"{RESULTS}/report/departures.parquet"]


rule departures:
    input:
        code=code_inputs("departures"),
    output:
        html=report(DEPARTURES[0], caption="../report/departures.rst",
                    category="Choices not in the paper"),
        table=DEPARTURES[1],
    params:
        rows=departure_table(config).to_dicts(),
    log:
        log_path("departures"),
    benchmark:
        bench_path("departures")
    conda:
        "../envs/analysis.yaml"
    script:
        "../scripts/run.py"
