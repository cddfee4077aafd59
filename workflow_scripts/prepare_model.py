"""Snakemake script for rule `prepare_model`: see motivation_profiles.workflow.prepare_model."""

from motivation_profiles.workflow import prepare_model, run

run(snakemake, prepare_model)  # noqa: F821 (injected by Snakemake)
