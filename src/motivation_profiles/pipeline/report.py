"""Rule entry points of workflow/rules/report.smk."""

from __future__ import annotations

import logging
from typing import Any

from motivation_profiles.pipeline.common import job_provenance

log = logging.getLogger("motivation_profiles")


def departures(snakemake: Any) -> None:
    """The "Choices not in the paper" table (rows computed from the config at DAG time, so an
    edit of the config's departures reruns this job only) as HTML for the report and Parquet."""
    import polars as pl

    from motivation_profiles.config.departures import COLUMNS, departures_html
    from motivation_profiles.core.io import atomic_path
    from motivation_profiles.core.provenance import write_table

    table = pl.DataFrame(list(snakemake.params.rows), schema=COLUMNS)
    for row in table.filter(pl.col("kind") == "stand-in").iter_rows(named=True):
        log.warning("stand-in for a released artefact: %s (%s)", row["key"], row["reason"])
    log.info("%d choices not in the paper", len(table))
    with atomic_path(snakemake.output.html) as tmp:
        tmp.write_text(departures_html(table))
    write_table(table, snakemake.output.table,
                job_provenance(snakemake, params=dict(snakemake.params.items())))
