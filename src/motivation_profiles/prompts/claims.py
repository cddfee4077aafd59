"""Prompt-intervention claims (paper section 2.5, Appendix C / E.2) and prompt condition names.

Each of the eight interventions of Table 1 has one factual claim at three strengths, stored in
``resources/claims/<intervention>.yaml`` (project-written text; see that folder's README). A
prompt condition appends one claim to the end of the alignment-faking system prompt
(``data.PromptSet.from_config(..., system_suffix=claim)``).

Condition names:

- ``prompt-{intervention}-{strength}``: the base model with the claim, e.g.
  ``prompt-A1_amp-strong``; its reference is ``baseline``;
- ``sdf-{branch}@prompt-{intervention}-{strength}``: the same claim on an SDF checkpoint
  (Appendix C.1 calibration), e.g. ``sdf-B1_amp@prompt-A2_sup-weak``; its reference is
  ``sdf-{branch}``. ``branch`` is an SDF branch name (``B1_amp``, ``A1_amp-strong``,
  ``noise``, ``A2_sup+self``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from motivation_profiles.core.io import load_yaml

STRENGTHS = ("weak", "standard", "strong")


INTERVENTIONS = ("A1_amp", "A1_sup", "A2_amp", "A2_sup", "B1_amp", "B1_sup", "B2_amp",
                 "B2_sup")


DIRECTIONS = {"amp": "amplify", "sup": "suppress"}


PREFIX = "prompt-"


CHECKPOINT_PREFIX = "sdf-"


SEPARATOR = "@"


REQUIRED_KEYS = ("intervention", "family", "direction", "summary", *STRENGTHS)


OPTIONAL_KEYS = ("notes",)


_PROMPT_RE = re.compile(r"prompt-(?P<intervention>[^-@]+)-(?P<strength>[^-@]+)")


_BRANCH_RE = re.compile(r"[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*(?:\+self)?")


class ClaimError(ValueError):
    """A claims file is missing or malformed, or a prompt condition name is malformed."""


def family_of(intervention: str) -> str:
    """``A1_amp`` -> ``A``; ``B2_sup`` -> ``B``."""
    if intervention not in INTERVENTIONS:
        raise ClaimError(f"unknown intervention {intervention!r}; expected one of "
                         f"{', '.join(INTERVENTIONS)}")
    return intervention[0]


def direction_of(intervention: str) -> str:
    """``A1_amp`` -> ``amp``; ``B2_sup`` -> ``sup``."""
    family_of(intervention)
    return intervention.rpartition("_")[2]


# ------------------------------------------------------------------------------- files
def claim_path(claims_dir: str | Path, intervention: str) -> Path:
    return Path(claims_dir) / f"{intervention}.yaml"


def read_claim_file(path: str | Path) -> dict[str, Any]:
    """Read and check one claims file; return its fields with the claims stripped.

    The file stem must be a known intervention, and ``intervention``, ``family`` and
    ``direction`` must agree with it; ``summary`` and every strength must be non-empty
    strings. Errors name the file and the key.
    """
    path = Path(path)
    stem = path.stem
    if stem not in INTERVENTIONS:
        raise ClaimError(f"{path}: file name {stem!r} is not an intervention; expected one of "
                         f"{', '.join(INTERVENTIONS)}")
    if not path.is_file():
        raise ClaimError(f"{path}: claims file for intervention {stem!r} does not exist")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise ClaimError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping):
        raise ClaimError(f"{path}: expected a mapping of keys "
                         f"({', '.join(REQUIRED_KEYS)}), got {type(data).__name__}")
    for key in data:
        if key not in REQUIRED_KEYS and key not in OPTIONAL_KEYS:
            raise ClaimError(f"{path}: unknown key {key!r}; allowed keys are "
                             f"{', '.join((*REQUIRED_KEYS, *OPTIONAL_KEYS))}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise ClaimError(f"{path}: missing key {key!r}")
    expected = {"intervention": stem, "family": family_of(stem),
                "direction": DIRECTIONS[direction_of(stem)]}
    for key, want in expected.items():
        if data[key] != want:
            raise ClaimError(f"{path}: key {key!r} is {data[key]!r} but the file name says "
                             f"{want!r}")
    out: dict[str, Any] = dict(data)
    for key in ("summary", *STRENGTHS):
        value = data[key]
        if not isinstance(value, str) or not value.strip():
            raise ClaimError(f"{path}: key {key!r} must be a non-empty string, got {value!r}")
        out[key] = value.strip()
    return out


def load_claims(claims_dir: str | Path, interventions: Iterable[str],
                strengths: Iterable[str]) -> dict[tuple[str, str], str]:
    """(intervention, strength) -> claim text, for every requested pair.

    Reads ``claims_dir/<intervention>.yaml`` for each intervention (see ``read_claim_file``).
    """
    interventions = list(interventions)
    strengths = list(strengths)
    for s in strengths:
        if s not in STRENGTHS:
            raise ClaimError(f"unknown claim strength {s!r}; expected one of "
                             f"{', '.join(STRENGTHS)}")
    claims: dict[tuple[str, str], str] = {}
    for i in interventions:
        path = claim_path(claims_dir, i)
        if i not in INTERVENTIONS:
            raise ClaimError(f"{path}: unknown intervention {i!r}; expected one of "
                             f"{', '.join(INTERVENTIONS)}")
        record = read_claim_file(path)
        for s in strengths:
            claims[(i, s)] = record[s]
    return claims


# ------------------------------------------------------------------------------- conditions
def _check_names(intervention: str, strength: str, what: str) -> None:
    if intervention not in INTERVENTIONS:
        raise ClaimError(f"{what}: unknown intervention {intervention!r}; expected one of "
                         f"{', '.join(INTERVENTIONS)}")
    if strength not in STRENGTHS:
        raise ClaimError(f"{what}: unknown claim strength {strength!r}; expected one of "
                         f"{', '.join(STRENGTHS)}")


def _check_branch(branch: str, what: str) -> None:
    if not _BRANCH_RE.fullmatch(branch):
        raise ClaimError(f"{what}: {branch!r} is not an SDF branch name (e.g. B1_amp, "
                         "A1_amp-strong, noise, A2_sup+self)")


def prompt_condition(intervention: str, strength: str, checkpoint: str | None = None) -> str:
    """``prompt-{intervention}-{strength}``, or ``sdf-{checkpoint}@prompt-...`` on an SDF
    checkpoint (``checkpoint`` is the branch name, without ``sdf-``)."""
    name = f"{PREFIX}{intervention}-{strength}"
    _check_names(intervention, strength, name)
    if checkpoint is None:
        return name
    checkpoint = checkpoint.removeprefix(CHECKPOINT_PREFIX)
    _check_branch(checkpoint, f"checkpoint of {name}")
    return f"{CHECKPOINT_PREFIX}{checkpoint}{SEPARATOR}{name}"


def parse_prompt_condition(condition: str) -> dict[str, Any] | None:
    """Parse a prompt condition name; None for a condition that appends no claim.

    Returns ``{"checkpoint", "intervention", "strength", "family", "direction"}``
    (``checkpoint``: the SDF branch or None; ``direction``: ``amp`` | ``sup``). A name that
    starts like a prompt condition (``prompt-...`` or ``...@prompt-...``) but is malformed
    raises ``ClaimError``.
    """
    if condition.startswith(PREFIX):
        checkpoint: str | None = None
        prompt_part = condition
    elif SEPARATOR + PREFIX in condition:
        head, _, prompt_part = condition.partition(SEPARATOR)
        if not head.startswith(CHECKPOINT_PREFIX):
            raise ClaimError(f"malformed prompt condition {condition!r}: a claim can be added "
                             "only to an SDF checkpoint, as sdf-<branch>@prompt-<intervention>-"
                             "<strength>")
        checkpoint = head.removeprefix(CHECKPOINT_PREFIX)
        _check_branch(checkpoint, f"condition {condition!r}")
    else:
        return None
    m = _PROMPT_RE.fullmatch(prompt_part)
    if m is None:
        raise ClaimError(f"malformed prompt condition {condition!r}: expected "
                         "prompt-<intervention>-<strength> (e.g. prompt-A1_amp-strong)")
    intervention, strength = m.group("intervention"), m.group("strength")
    _check_names(intervention, strength, f"condition {condition!r}")
    return {"checkpoint": checkpoint, "intervention": intervention, "strength": strength,
            "family": family_of(intervention), "direction": direction_of(intervention)}
