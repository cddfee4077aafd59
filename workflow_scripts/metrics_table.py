"""Snakemake script for rule `metrics_table`: see motivation_profiles.workflow.metrics_table."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import metrics_table, run  # noqa: E402

run(snakemake, metrics_table)  # noqa: F821
