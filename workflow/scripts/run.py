"""The script of every rule: runs the rule's entry point (motivation_profiles.pipeline.registry)
with logging to the rule's log file."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.pipeline.common import run  # noqa: E402
from motivation_profiles.pipeline.registry import entry_point  # noqa: E402

run(snakemake, entry_point(snakemake.rule))  # noqa: F821
