"""Snakemake script for every rule of rules/steering.smk: runs the function of
motivation_profiles.workflow_steering named like the rule."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles import workflow_steering  # noqa: E402
from motivation_profiles.workflow import run  # noqa: E402

run(snakemake, getattr(workflow_steering, snakemake.rule))  # noqa: F821
