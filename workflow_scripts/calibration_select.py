"""Snakemake script for rule `calibration_select`: see motivation_profiles.workflow.calibration_select."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import calibration_select, run  # noqa: E402

run(snakemake, calibration_select)  # noqa: F821
