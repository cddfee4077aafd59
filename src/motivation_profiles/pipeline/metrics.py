"""Rule entry points of workflow/rules/metrics.smk."""

from __future__ import annotations

import logging
from typing import Any

from motivation_profiles.pipeline.common import job_provenance, read_all

log = logging.getLogger("motivation_profiles")


def _columns_text(table: Any) -> str:
    """A polars table printed transposed (one line per column), every row and column shown."""
    import polars as pl

    columns = [str(i) for i in range(len(table))]
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=1000, fmt_str_lengths=200):
        return str(table.transpose(include_header=True, header_name="column",
                                   column_names=columns))


def metrics(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.metrics.rates import condition_metrics

    p = snakemake.params
    table = condition_metrics(read_table(snakemake.input.table), n_boot=p.bootstrap_samples,
                              level=p.ci_level, seed=p.seed)
    log.info("\n%s", _columns_text(table))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def metrics_table(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table

    table = read_all(snakemake.input.tables)
    write_table(table, snakemake.output[0], job_provenance(snakemake))
