"""motivation-profiles: the package behind the Snakemake workflow.

All logic lives here; rules and workflow scripts only pass paths and parameters in.
Importing this package never touches the network and never constructs an API client.
"""

from motivation_profiles.core.version import __version__

__all__ = ["__version__"]
