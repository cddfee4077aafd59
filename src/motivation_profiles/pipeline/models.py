"""Rule entry points of workflow/rules/models.smk."""

from __future__ import annotations

from typing import Any

# ----------------------------------------------------------------------------- rules


def prepare_model(snakemake: Any) -> None:
    from motivation_profiles.models.prepare import prepare_model as prepare

    prepare(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0])


def prepare_organism(snakemake: Any) -> None:
    from motivation_profiles.models.prepare import prepare_adapter

    prepare_adapter(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0])
