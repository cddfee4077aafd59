"""Rule entry points of workflow/rules/metrics.smk."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from motivation_profiles.pipeline.common import job_provenance

log = logging.getLogger("motivation_profiles")


def metrics(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.metrics.rates import condition_metrics

    p = snakemake.params
    table = condition_metrics(read_table(snakemake.input.table), n_boot=p.bootstrap_samples,
                              level=p.ci_level, seed=p.seed)
    log.info("\n%s", table.T.to_string())
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def metrics_table(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import read_table, write_table

    table = pd.concat([read_table(f) for f in snakemake.input.tables], ignore_index=True)
    write_table(table, snakemake.output[0], job_provenance(snakemake))
