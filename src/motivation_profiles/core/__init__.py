"""Bottom layer: atomic I/O, hashing, provenance, spec helpers.

Imports nothing else of the package (checked by the import contract in pyproject.toml)."""
