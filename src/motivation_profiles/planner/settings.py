"""The planner's assumptions: the config's optional ``planner`` section over the defaults
written in the schema (``workflow/schemas/config.schema.yaml``, ``planner``), the one place
they are documented."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from motivation_profiles.config.validate import load_schema


def schema_defaults() -> dict[str, Any]:
    """Every ``planner`` key's ``default`` from the schema."""
    props = load_schema()["properties"]["planner"]["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items()}


def planner_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's ``planner`` keys over the schema defaults (``throughput`` merged per GPU
    type, ``models`` per model)."""
    out = schema_defaults()
    given = dict(config.get("planner") or {})
    for key in ("throughput", "models"):
        merged = dict(out[key])
        merged.update(given.pop(key, {}) or {})
        out[key] = merged
    out.update(given)
    if out["gpu_type"] not in out["throughput"]:
        raise ValueError(f"planner.gpu_type {out['gpu_type']!r} has no entry in "
                         f"planner.throughput (known: {sorted(out['throughput'])})")
    return out


__all__ = ["planner_settings", "schema_defaults"]
