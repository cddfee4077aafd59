"""Snakemake script for rule `calibration`: see motivation_profiles.workflow.calibration."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import calibration, run  # noqa: E402

run(snakemake, calibration)  # noqa: F821
