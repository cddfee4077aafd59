"""Snakemake script for rule `goals`: see motivation_profiles.workflow.goals."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import goals, run  # noqa: E402

run(snakemake, goals)  # noqa: F821
