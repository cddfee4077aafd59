"""Snakemake script for rule `train_lora`: see motivation_profiles.workflow.train_lora."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import run, train_lora  # noqa: E402

run(snakemake, train_lora)  # noqa: F821
