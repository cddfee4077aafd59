"""Snakemake script for rule `sdf_dataset`: see motivation_profiles.workflow.sdf_dataset."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import run, sdf_dataset  # noqa: E402

run(snakemake, sdf_dataset)  # noqa: F821
