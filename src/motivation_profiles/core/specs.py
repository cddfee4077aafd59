"""Dataclass specs from config mappings, with one key check for every spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def spec_from_mapping(cls, d: Any, what: str, *, ignore: frozenset[str] = frozenset()):
    """Build the dataclass ``cls`` from a config section, naming unknown and missing keys.

    Types and ranges are the schema's job (every config is validated before any job runs);
    checks the schema cannot express belong in the dataclass's ``__post_init__``. ``ignore``:
    keys of the section that belong to someone else (e.g. the backend choice).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"{what}: expected a mapping, got {type(d).__name__}")
    fields = cls.__dataclass_fields__
    unknown = sorted(set(d) - set(fields) - ignore)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; known: {sorted(fields)}")
    from dataclasses import MISSING

    missing = [n for n, f in fields.items() if n not in d and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"{what}: missing key(s) {missing}")
    return cls(**{k: v for k, v in d.items() if k in fields})
