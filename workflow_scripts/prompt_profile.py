"""Snakemake script for rule `prompt_profile`: see motivation_profiles.workflow.prompt_profile."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import prompt_profile, run  # noqa: E402

run(snakemake, prompt_profile)  # noqa: F821
