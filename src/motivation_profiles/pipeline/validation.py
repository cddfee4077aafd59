"""Rule entry points of workflow/rules/validation.smk."""

from __future__ import annotations

import logging
from typing import Any

from motivation_profiles.pipeline.common import job_provenance, read_all

log = logging.getLogger("motivation_profiles")


def planted_recovery(snakemake: Any) -> None:
    """Every quantity the DAG estimated for a simulated model beside its planted value."""
    import polars as pl

    from motivation_profiles.backends.simulated import Policy
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.metrics.recovery import recovery_table, summary, vector_tables

    p = snakemake.params
    inp = snakemake.input
    policy = Policy.load(inp.policy)
    effects = [read_table(f) for f in inp.get("effects", [])]
    has_cal = "selection" in inp.keys()
    steering = None
    if "steering_effects" in inp.keys():
        steering = {"effects": read_table(inp.steering_effects),
                    "rollouts": read_all(inp.steered), "vectors": vector_tables(inp.vectors),
                    "layers": read_table(inp.layers), "k": p.layer_count}
    table = recovery_table(
        policy, model=snakemake.wildcards.model, metrics=read_table(inp.metrics),
        effects=effects, judged=read_all(inp.judged),
        selection=read_table(inp.selection) if has_cal else None,
        calibration=read_table(inp.calibration) if has_cal else None,
        calibration_rule=p.calibration, steering=steering, n_boot=p.bootstrap_samples,
        level=p.ci_level,
        seed=p.seed)
    missed = table.filter(~pl.col("covered"))
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
        log.info("summary: %s\nnot covered / not equal:\n%s", summary(table),
                 missed.select("quantity", "method", "target", "condition", "planted",
                               "estimate", "ci_low", "ci_high", "z"))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))
