"""Snakemake script for rule `generate_documents`: see motivation_profiles.workflow.generate_documents."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.workflow import generate_documents, run  # noqa: E402

run(snakemake, generate_documents)  # noqa: F821
