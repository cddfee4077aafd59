"""Snakemake script for rule `advbench`: see motivation_profiles.workflow.advbench."""

from motivation_profiles.workflow import advbench, run

run(snakemake, advbench)  # noqa: F821 (injected by Snakemake)
