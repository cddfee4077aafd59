"""Snakemake script for rule `judge`: see motivation_profiles.workflow.judge."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import judge, run  # noqa: E402

run(snakemake, judge)  # noqa: F821
