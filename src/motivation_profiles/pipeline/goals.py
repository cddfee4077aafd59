"""Rule entry points of workflow/rules/goals.smk."""

from __future__ import annotations

import logging
from typing import Any

from motivation_profiles.pipeline.common import job_provenance

log = logging.getLogger("motivation_profiles")


def advbench(snakemake: Any) -> None:
    from motivation_profiles.goals.advbench import download

    download(snakemake.params.url, snakemake.output[0], sha256=snakemake.params.sha256)


def goals(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.goals.advbench import load_goals

    p = snakemake.params
    if p.sha256 is None:
        log.warning("goals.sha256 is null: the goal file is NOT verified against a checksum")
    df = load_goals(snakemake.input.goals, sha256=p.sha256, n=p.n, seed=p.seed)
    log.info("kept %d goals (n=%s, seed=%d)", len(df), p.n, p.seed)
    write_table(df, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def goals_sized(snakemake: Any) -> None:
    """Rule goals_sized: a simulated model's own goal sample (models.<m>.goals_n)."""
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.goals.advbench import load_goals

    p = snakemake.params
    df = load_goals(snakemake.input.goals, sha256=p.sha256, n=p.n, seed=p.seed)
    log.info("kept %d goals (n=%s, seed=%d)", len(df), p.n, p.seed)
    write_table(df, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))
