"""Snakemake script for rule `figure_sdf`: see motivation_profiles.workflow.figure_sdf."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import figure_sdf, run  # noqa: E402

run(snakemake, figure_sdf)  # noqa: F821
