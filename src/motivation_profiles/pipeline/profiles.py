"""Rule entry points of workflow/rules/profiles.smk."""

from __future__ import annotations

import logging
from typing import Any

from motivation_profiles.pipeline.common import job_provenance, read_all

log = logging.getLogger("motivation_profiles")


def _text(table: Any) -> str:
    """A polars table printed with every row and column shown."""
    import polars as pl

    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=1000, fmt_str_lengths=200):
        return str(table)


def _profile_points(table: Any) -> Any:
    import polars as pl

    return table.filter(pl.col("quantity").str.starts_with("S_"))


def prompt_profile(snakemake: Any) -> None:
    """Effects of every prompt claim (per strength) on the base model, with S_A and S_B."""
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.metrics.profiles import prompt_effects

    p = snakemake.params
    table = prompt_effects(read_all(snakemake.input.tables), interventions=p.interventions,
                           strengths=p.strengths, n_boot=p.bootstrap_samples,
                           level=p.ci_level, seed=p.seed)
    log.info("\n%s", _text(_profile_points(table)))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def calibration_select(snakemake: Any) -> None:
    """Appendix C.1: which SDF checkpoints the prompt interventions are calibrated on."""
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.metrics.calibration import select_checkpoints

    p = snakemake.params
    table = select_checkpoints(read_all(snakemake.input.tables), model=snakemake.wildcards.model,
                               reference=p.reference, candidates=p.candidates, signal=p.signal,
                               max_per_family=p.max_per_family, tolerance=p.tolerance)
    log.info("\n%s", _text(table))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def calibration(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.metrics.calibration import calibration_effects

    p = snakemake.params
    selection = read_table(snakemake.input.selection)
    table = calibration_effects(read_all(snakemake.input.tables), selection,
                                interventions=p.interventions, strengths=p.strengths,
                                n_boot=p.bootstrap_samples, level=p.ci_level, seed=p.seed,
                                signal=p.signal)
    log.info("recovered (on %s): %s\n%s", p.signal, table["recovered"][0],
             _text(_profile_points(table)))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def profiles(snakemake: Any) -> None:
    """S_A and S_B of every model x method (x strength, naming) in one table."""
    import polars as pl

    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.metrics.profiles import profile_rows

    table = profile_rows(read_all(snakemake.input.tables))
    names = table["model"].replace_strict(dict(snakemake.params.display_names), default=None,
                                          return_dtype=pl.Utf8)
    table = table.insert_column(1, names.alias("display_name"))
    log.info("\n%s", _text(table.select("model", "method", "strength", "naming", "quantity",
                                        "estimate", "ci_low", "ci_high")))
    write_table(table, snakemake.output[0], job_provenance(snakemake))
