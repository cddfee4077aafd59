"""Snakemake script for rule `metrics`: see motivation_profiles.workflow.metrics."""

from motivation_profiles.workflow import metrics, run

run(snakemake, metrics)  # noqa: F821 (injected by Snakemake)
