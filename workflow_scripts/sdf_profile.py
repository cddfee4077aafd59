"""Snakemake script for rule `sdf_profile`: see motivation_profiles.workflow.sdf_profile."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import run, sdf_profile  # noqa: E402

run(snakemake, sdf_profile)  # noqa: F821
