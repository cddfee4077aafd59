"""Snakemake script for rule `goals`: see motivation_profiles.workflow.goals."""

from motivation_profiles.workflow import goals, run

run(snakemake, goals)  # noqa: F821 (injected by Snakemake)
