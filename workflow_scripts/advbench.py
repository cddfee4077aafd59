"""Snakemake script for rule `advbench`: see motivation_profiles.workflow.advbench."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import advbench, run  # noqa: E402

run(snakemake, advbench)  # noqa: F821
