# motivation-profiles: reproduces "Building Comparative Motivation Profiles with Instrumental
# Interventions" as a file-level DAG. All logic lives in src/motivation_profiles; rules only
# wire paths and parameters. See README.md.

from snakemake.utils import min_version

min_version("9.0")

# The embedded default, unless --configfile names another config: a merge would add the
# embedded model's jobs to e.g. a paper-scale run (Snakemake merges configs key by key).
if not config:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/goals.smk"
include: "workflow/rules/sdf.smk"
include: "workflow/rules/rollouts.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/judge.smk"
include: "workflow/rules/profiles.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/validation.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/browser.smk"


rule all:
    default_target: True
    input:
        metrics_tables(),
        sdf_belief_tables(),
        judge_tables(),
        calibration_judge_tables,
        profile_outputs(),
        steering_outputs(),
        validation_tables(),
        figure_files(),
        DEPARTURES,
        f"{RESULTS}/browser",


rule figures:
    input:
        figure_files(),
