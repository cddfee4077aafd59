"""Names of steering vectors and steering conditions (one place, so rules, tables and figures
agree).

- A fitted vector is ``{concept}_{source}`` (``expectations_ooc``); a norm-matched random
  control of it is ``random_{concept}_{source}_{k}`` (``random_expectations_ooc_3``).
- ``steer-{vector}-x{multiplier}`` runs the AF evaluation with ``multiplier * v`` added at the
  selected layers; the multiplier is signed and written with its sign (``x+4``, ``x-0.5``).
- ``raw-baseline`` and ``raw-{vector}-x{multiplier}`` are the raw-AdvBench control: the goal as
  the only user message, no system prompt and no tag protocol (Appendix D.6).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CONCEPTS = ("expectations", "consequences")


SOURCES = ("ooc", "ic")


# The judge's rubric directions each concept corresponds to (Appendix D.7).
CONCEPT_DIRECTION = {"expectations": "a", "consequences": "b"}


# The intervention id a concept stands for when steering joins the profile (S_A, S_B).
CONCEPT_INTERVENTION = {"expectations": "A1", "consequences": "B1"}


_VECTOR = re.compile(r"(?:random_)?(expectations|consequences)_(ooc|ic)(?:_(\d+))?")


_MULT = r"x([+-](?:\d+(?:\.\d+)?))"


_STEER = re.compile(rf"steer-(?P<vector>[a-z_0-9]+)-{_MULT}")


_RAW = re.compile(rf"raw-(?:baseline|(?P<vector>[a-z_0-9]+)-{_MULT})")


def vector_name(concept: str, source: str) -> str:
    return f"{concept}_{source}"


def random_name(concept: str, source: str, k: int) -> str:
    return f"random_{concept}_{source}_{k}"


def format_multiplier(multiplier: float) -> str:
    """``4`` -> ``+4``, ``-0.5`` -> ``-0.5`` (the sign is always written)."""
    m = float(multiplier)
    text = f"{m:+g}"
    if "e" in text:
        raise ValueError(f"multiplier {multiplier!r} cannot be written in a condition name")
    return text


def steer_condition(vector: str, multiplier: float) -> str:
    return f"steer-{vector}-x{format_multiplier(multiplier)}"


def raw_condition(vector: str | None = None, multiplier: float | None = None) -> str:
    if vector is None:
        return "raw-baseline"
    return f"raw-{vector}-x{format_multiplier(multiplier)}"


@dataclass(frozen=True)
class VectorRef:
    name: str
    concept: str
    source: str
    kind: str          # fitted | random
    k: int | None      # random control index

    @property
    def of(self) -> str:
        """The fitted vector this one is (or controls for)."""
        return vector_name(self.concept, self.source)


def parse_vector(name: str) -> VectorRef:
    m = _VECTOR.fullmatch(name)
    random = name.startswith("random_")
    if m is None or random != (m.group(3) is not None):
        raise ValueError(f"{name!r} is not a vector name ({{concept}}_{{source}} or "
                         f"random_{{concept}}_{{source}}_{{k}}; concepts {CONCEPTS}, "
                         f"sources {SOURCES})")
    return VectorRef(name, m.group(1), m.group(2), "random" if random else "fitted",
                     int(m.group(3)) if random else None)


@dataclass(frozen=True)
class SteerCondition:
    condition: str
    vector: VectorRef | None   # None: raw-baseline
    multiplier: float          # 0 for raw-baseline
    raw: bool


def parse_steer_condition(condition: str) -> SteerCondition | None:
    """The vector and multiplier of a ``steer-`` or ``raw-`` condition; None for other kinds.
    A malformed steering name raises ValueError saying what was expected."""
    if condition.startswith("steer-"):
        m = _STEER.fullmatch(condition)
        if m is None:
            raise ValueError(f"{condition!r}: expected steer-{{vector}}-x{{+|-}}{{multiplier}}")
        return SteerCondition(condition, parse_vector(m.group("vector")),
                              float(m.group(2)), raw=False)
    if condition.startswith("raw-"):
        m = _RAW.fullmatch(condition)
        if m is None:
            raise ValueError(f"{condition!r}: expected raw-baseline or "
                             "raw-{vector}-x{+|-}{multiplier}")
        if m.group("vector") is None:
            return SteerCondition(condition, None, 0.0, raw=True)
        return SteerCondition(condition, parse_vector(m.group("vector")), float(m.group(2)),
                              raw=True)
    return None


__all__ = ["CONCEPTS", "SOURCES", "CONCEPT_DIRECTION", "CONCEPT_INTERVENTION", "VectorRef",
           "SteerCondition", "vector_name", "random_name", "format_multiplier",
           "steer_condition", "raw_condition", "parse_vector", "parse_steer_condition"]
