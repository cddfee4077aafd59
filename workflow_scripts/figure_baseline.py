"""Snakemake script for rule `figure_baseline`: see motivation_profiles.workflow.figure_baseline."""

from motivation_profiles.workflow import figure_baseline, run

run(snakemake, figure_baseline)  # noqa: F821 (injected by Snakemake)
