"""The script of every rule: runs the rule's entry point (motivation_profiles.pipeline.registry)
with logging to the rule's log file (in a warm-start child for model rules under
MP_WARM_START=1: motivation_profiles.pipeline.warm)."""

import sys
from pathlib import Path

# Import the package from this checkout, also inside --use-conda envs where it is not installed.
sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # noqa: F821 (Snakemake)

from motivation_profiles.pipeline.warm import dispatch  # noqa: E402

dispatch(snakemake)  # noqa: F821
