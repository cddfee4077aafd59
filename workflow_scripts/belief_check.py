"""Snakemake script for rule `belief_check`: see motivation_profiles.workflow.belief_check."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import belief_check, run  # noqa: E402

run(snakemake, belief_check)  # noqa: F821
