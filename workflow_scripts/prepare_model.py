"""Snakemake script for rule `prepare_model`: see motivation_profiles.workflow.prepare_model."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import prepare_model, run  # noqa: E402

run(snakemake, prepare_model)  # noqa: F821
