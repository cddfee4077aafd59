"""Snakemake script for rule `rollouts`: see motivation_profiles.workflow.rollouts."""

from motivation_profiles.workflow import rollouts, run

run(snakemake, rollouts)  # noqa: F821 (injected by Snakemake)
