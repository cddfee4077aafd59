# motivation-profiles: reproduces "Building Comparative Motivation Profiles with Instrumental
# Interventions" as a file-level DAG. All logic lives in src/motivation_profiles; rules only
# wire paths and parameters. See README.md.

from snakemake.utils import min_version

min_version("9.0")

# The embedded default, unless --configfile names another config: a merge would add the
# embedded model's jobs to e.g. a paper-scale run (Snakemake merges configs key by key).
if not config:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/goals.smk"
include: "rules/sdf.smk"
include: "rules/rollouts.smk"
include: "rules/metrics.smk"
include: "rules/judge.smk"
include: "rules/profiles.smk"
include: "rules/steering.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        metrics_tables(),
        sdf_belief_tables(),
        judge_tables(),
        calibration_judge_tables,
        profile_outputs(),
        steering_outputs(),
        figure_files(),


rule figures:
    input:
        figure_files(),
