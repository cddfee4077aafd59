"""Intervention materials: one YAML file per universe under ``resources/universes/``.

A universe is what one SDF document set is generated from: a universe context (a short
description of a fictional world), one key fact, and what the belief check and the leakage
filter need. File stems are the ``{universe}`` wildcard:

- ``af_organism``: the alignment-faking setting (the model organism's documents);
- ``noise``: documents that carry neither family's belief (the SDF baseline);
- ``A1_amp`` ... ``B2_sup``: the eight interventions at standard directness, and
  ``A1_amp-weak`` / ``A1_amp-strong`` ... the other two strengths (Appendix B.2 sweep).

Editing one file changes one branch of the DAG: its documents, datasets, adapters, rollouts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

INTERVENTIONS = ("A1_amp", "A1_sup", "A2_amp", "A2_sup", "B1_amp", "B1_sup", "B2_amp", "B2_sup")


STRENGTHS = ("weak", "standard", "strong")


ORGANISM = "af_organism"


NOISE = "noise"


UNIVERSE_RE = re.compile(r"^(af_organism|noise|[AB][12]_(amp|sup)(-(weak|strong))?)$")


# Paper labels: A1+ / A1- ...
LABELS = {i: i.replace("_amp", "+").replace("_sup", "\u2212") for i in INTERVENTIONS}


class MaterialsError(ValueError):
    """A universe file is missing, malformed or inconsistent with its name."""


def universe_id(intervention: str, strength: str = "standard") -> str:
    """The wildcard value of an intervention at a strength (standard has no suffix)."""
    if intervention not in INTERVENTIONS:
        raise MaterialsError(f"unknown intervention {intervention!r}; expected one of "
                             f"{', '.join(INTERVENTIONS)}")
    if strength not in STRENGTHS:
        raise MaterialsError(f"unknown strength {strength!r}; expected one of {STRENGTHS}")
    return intervention if strength == "standard" else f"{intervention}-{strength}"


def split_universe(universe: str) -> tuple[str | None, str | None]:
    """``"A1_amp-weak"`` -> ``("A1_amp", "weak")``; organism / noise -> ``(None, None)``."""
    if not UNIVERSE_RE.fullmatch(universe):
        raise MaterialsError(f"{universe!r} is not a universe name (af_organism, noise, "
                             "A1_amp ... B2_sup, optionally with -weak or -strong)")
    if universe in (ORGANISM, NOISE):
        return None, None
    base, _, strength = universe.partition("-")
    return base, strength or "standard"


@dataclass(frozen=True)
class Universe:
    id: str
    kind: str                      # "organism" | "noise" | "intervention"
    universe_context: str
    key_fact: str
    intervention: str | None = None
    family: str | None = None      # "A" | "B"
    direction: str | None = None   # "amp" | "sup"
    strength: str | None = None    # "weak" | "standard" | "strong"
    variable: str | None = None    # e.g. "researcher hopes"
    belief_fact: tuple[str, ...] = ()      # paraphrases of the key fact
    belief_negation: tuple[str, ...] = ()  # paraphrases of its negation
    leakage_terms: tuple[str, ...] = ()    # a document containing one is dropped
    source: str = ""

    @property
    def label(self) -> str:
        if self.intervention is None:
            return self.id
        lab = LABELS[self.intervention]
        return lab if self.strength == "standard" else f"{lab} ({self.strength})"


def _text(data: Mapping[str, Any], key: str, source: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MaterialsError(f"{source}: '{key}' must be a non-empty string")
    return value.strip()


def _strings(data: Any, key: str, source: str, *, required: bool) -> tuple[str, ...]:
    if data is None:
        if required:
            raise MaterialsError(f"{source}: '{key}' is required")
        return ()
    if (not isinstance(data, Sequence) or isinstance(data, str)
            or not all(isinstance(s, str) and s.strip() for s in data)):
        raise MaterialsError(f"{source}: '{key}' must be a list of non-empty strings")
    if required and not data:
        raise MaterialsError(f"{source}: '{key}' must not be empty")
    return tuple(s.strip() for s in data)


KNOWN_KEYS = {"id", "kind", "intervention", "family", "variable", "direction", "strength",
              "universe_context", "key_fact", "belief_check", "leakage_terms",
              "notes"}  # notes: free text for authors, not used


def parse_universe(data: Any, *, source: str, expected_id: str | None = None) -> Universe:
    if not isinstance(data, Mapping):
        raise MaterialsError(f"{source}: expected a YAML mapping")
    unknown = set(data) - KNOWN_KEYS
    if unknown:
        raise MaterialsError(f"{source}: unknown key(s) {sorted(unknown)}; known: "
                             f"{sorted(KNOWN_KEYS)}")
    uid = _text(data, "id", source)
    if expected_id is not None and uid != expected_id:
        raise MaterialsError(f"{source}: id {uid!r} does not match the file name "
                             f"{expected_id!r}")
    try:
        base, strength = split_universe(uid)
    except MaterialsError as exc:
        raise MaterialsError(f"{source}: {exc}") from exc
    kind = data.get("kind")
    want_kind = ("organism" if uid == ORGANISM else "noise" if uid == NOISE else "intervention")
    if kind != want_kind:
        raise MaterialsError(f"{source}: kind must be {want_kind!r} for {uid}, got {kind!r}")
    belief = data.get("belief_check")
    if kind == "noise":
        fact, neg = (), ()
        if belief is not None:
            raise MaterialsError(f"{source}: the noise universe carries no belief to check; "
                                 "remove 'belief_check'")
    else:
        if not isinstance(belief, Mapping):
            raise MaterialsError(f"{source}: 'belief_check' with 'fact' and 'negation' "
                                 "paraphrase lists is required")
        fact = _strings(belief.get("fact"), "belief_check.fact", source, required=True)
        neg = _strings(belief.get("negation"), "belief_check.negation", source, required=True)
        if len(fact) != len(neg):
            raise MaterialsError(f"{source}: 'belief_check.fact' and 'belief_check.negation' "
                                 f"must pair up ({len(fact)} vs {len(neg)} paraphrases)")
    fields: dict[str, Any] = {}
    if kind == "intervention":
        for key, want in (("intervention", base), ("strength", strength),
                          ("family", base[0]), ("direction", base.split("_")[1])):
            if data.get(key) != want:
                raise MaterialsError(f"{source}: '{key}' must be {want!r} for {uid}, "
                                     f"got {data.get(key)!r}")
            fields[key] = want
        fields["variable"] = _text(data, "variable", source)
    return Universe(
        id=uid, kind=kind,
        universe_context=_text(data, "universe_context", source),
        key_fact=_text(data, "key_fact", source),
        belief_fact=fact, belief_negation=neg,
        leakage_terms=_strings(data.get("leakage_terms"), "leakage_terms", source,
                               required=False),
        source=source, **fields,
    )


def load_universe(path: str | Path) -> Universe:
    p = Path(path)
    if not p.is_file():
        raise MaterialsError(f"universe file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MaterialsError(f"{p}: not UTF-8 text ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MaterialsError(f"{p}: not valid YAML ({exc})") from exc
    return parse_universe(data, source=str(p), expected_id=p.stem)


def universe_path(directory: str | Path, universe: str) -> Path:
    split_universe(universe)
    return Path(directory) / f"{universe}.yaml"


def apply_name(text: str, original: str, replacement: str) -> str:
    """Role-play ablation (Appendix B.3): replace the AI's name as a whole word."""
    return re.sub(rf"\b{re.escape(original)}\b", replacement, text)
