"""OOC pair materials: prompts, keywords, topics and styles from resources/steering/."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from motivation_profiles.steering.names import CONCEPTS
from motivation_profiles.steering.pair_format import OOC_SPLITS, SIDES, VARIANTS, found_terms

MATERIAL_FILES = ("ooc_prompts.yaml", "keywords.yaml", "topics.txt", "neutral_texts.txt")


class MaterialsError(ValueError):
    """A steering materials file is missing or malformed (the message names file and key)."""


# ============================================================================ materials


@dataclass(frozen=True)
class SideStyle:
    """How one side's sentence is asked for: the instruction and the prefilled openers."""

    instruction: str
    openers: tuple[str, ...]


@dataclass(frozen=True)
class OOCMaterials:
    """Everything OOC generation and filtering read from the materials directory."""

    directory: str
    request_user: str
    request_prefill: str
    reply_system: str
    reasoning_lead: str
    output_lead: str
    output_mode: str        # answer | continue
    sentence_user: str
    styles: Mapping[tuple[str, str, str], SideStyle]   # (concept, variant, side)
    keywords: Mapping[str, tuple[str, ...]]
    label_phrases: tuple[str, ...]
    banned_terms: tuple[str, ...]
    topics: tuple[str, ...]
    neutral_texts: tuple[str, ...]

    def style(self, concept: str, split: str, side: str) -> SideStyle:
        return self.styles[(concept, variant_of(split), side)]


def variant_of(split: str) -> str:
    if split not in OOC_SPLITS:
        raise ValueError(f"unknown OOC split {split!r}; expected one of {OOC_SPLITS}")
    return "keyword_hard" if split == "keyword_hard" else "standard"


def _fields(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}


def _get(d: Any, key: str, source: str, kind: type = str, *, required: bool = True,
         fields: set[str] | None = None) -> Any:
    """``d[key]`` (a dotted path) checked for type and template fields."""
    cur = d
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            if not required:
                return kind()
            raise MaterialsError(f"{source}: key '{key}' is missing")
        cur = cur[part]
    if cur is None and not required:
        return kind()
    if kind is str:
        if not isinstance(cur, str):
            raise MaterialsError(f"{source}: key '{key}' must be a string")
        if fields is not None:
            try:
                found = _fields(cur)
            except ValueError as exc:
                raise MaterialsError(f"{source}: key '{key}': bad template ({exc}); write "
                                     "literal braces as '{{' and '}}'") from exc
            if found != fields:
                raise MaterialsError(f"{source}: key '{key}' must use exactly the fields "
                                     f"{sorted(fields)}, found {sorted(found)}")
    elif kind is list:
        if not isinstance(cur, list) or not all(isinstance(x, str) and x.strip() for x in cur):
            raise MaterialsError(f"{source}: key '{key}' must be a list of non-empty strings")
    return cur


def _yaml(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        raise MaterialsError(f"steering materials file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MaterialsError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, Mapping):
        raise MaterialsError(f"{path}: expected a YAML mapping at the top level")
    return data


def _lines(path: Path, minimum: int) -> tuple[str, ...]:
    if not path.is_file():
        raise MaterialsError(f"steering materials file {path} does not exist")
    lines = tuple(dict.fromkeys(s.strip() for s in path.read_text().splitlines() if s.strip()
                                and not s.lstrip().startswith("#")))
    if len(lines) < minimum:
        raise MaterialsError(f"{path}: {len(lines)} non-empty lines, need at least {minimum}")
    return lines


def load_materials(directory: str | Path) -> OOCMaterials:
    """Read and check ``ooc_prompts.yaml``, ``keywords.yaml``, ``topics.txt`` and
    ``neutral_texts.txt`` from ``directory``."""
    d = Path(directory)
    src = str(d / "ooc_prompts.yaml")
    p = _yaml(d / "ooc_prompts.yaml")
    styles: dict[tuple[str, str, str], SideStyle] = {}
    for concept in CONCEPTS:
        for variant in VARIANTS:
            for side in SIDES:
                key = f"concepts.{concept}.{variant}.{side}"
                instruction = _get(p, f"{key}.instruction", src).strip()
                if not instruction:
                    raise MaterialsError(f"{src}: key '{key}.instruction' is empty")
                openers = tuple(o.strip() for o in _get(p, f"{key}.openers", src, list,
                                                        required=False))
                styles[(concept, variant, side)] = SideStyle(instruction, openers)
    ksrc = str(d / "keywords.yaml")
    k = _yaml(d / "keywords.yaml")
    keywords = {c: tuple(_get(k, f"controlled_keywords.{c}", ksrc, list)) for c in CONCEPTS}
    for c, words in keywords.items():
        if not words:
            raise MaterialsError(f"{ksrc}: key 'controlled_keywords.{c}' is empty")
    materials = OOCMaterials(
        directory=str(d),
        request_user=_get(p, "request.user", src, fields={"topic"}),
        request_prefill=_get(p, "request.prefill", src, required=False),
        reply_system=_get(p, "reply.system", src, fields=set()),
        reasoning_lead=_get(p, "reply.reasoning_lead", src, required=False),
        output_lead=_get(p, "reply.output_lead", src, required=False),
        output_mode=_get(p, "reply.output_mode", src, required=False) or "answer",
        sentence_user=_get(p, "sentence.user", src,
                           fields={"request", "scratchpad", "instruction"}),
        styles=styles,
        keywords=keywords,
        label_phrases=tuple(_get(k, "label_phrases", ksrc, list)),
        banned_terms=tuple(_get(k, "banned_terms", ksrc, list)),
        topics=_lines(d / "topics.txt", 1),
        neutral_texts=_lines(d / "neutral_texts.txt", 1),
    )
    if materials.output_mode not in ("answer", "continue"):
        raise MaterialsError(f"{src}: key 'reply.output_mode' must be 'answer' or 'continue', "
                             f"got {materials.output_mode!r}")
    for concept in CONCEPTS:
        words = keywords[concept]
        for opener in styles[(concept, "keyword_hard", "positive")].openers:
            if found_terms(opener, words):
                raise MaterialsError(
                    f"{src}: key 'concepts.{concept}.keyword_hard.positive.openers': "
                    f"{opener!r} contains controlled keywords {found_terms(opener, words)}")
    return materials
