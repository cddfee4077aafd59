# motivation-profiles: reproduces "Building Comparative Motivation Profiles with Instrumental
# Interventions" as a file-level DAG. All logic lives in src/motivation_profiles; rules only
# wire paths and parameters. See README.md and ../shared/DESIGN.md-derived docs in docs/.

import os

from snakemake.utils import min_version

min_version("9.0")

configfile: "config.yaml"

# Jobs import the package from this checkout (also inside --use-conda envs and SLURM jobs,
# which re-parse this file), so the code that ran is the code in the commit recorded in
# every output's provenance.
_SRC = os.path.join(workflow.basedir, "src")
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_SRC, os.environ.get("PYTHONPATH", "")) if p
)


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/goals.smk"
include: "rules/rollouts.smk"
include: "rules/metrics.smk"
include: "rules/figures.smk"


rule all:
    default_target: True
    input:
        metrics_tables(),
        figure_files(),


rule figures:
    input:
        figure_files(),
