"""Config checks of the steering stage (called by config validation)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Files the steering stage reads from steering.materials_dir (pairs.load_materials names them).
STEERING_MATERIALS = ("ooc_prompts.yaml", "keywords.yaml", "topics.txt", "neutral_texts.txt")


def check_config(config: Mapping[str, Any], base: Path, problems: list[str],
                     need_file) -> None:
    s = config["steering"]
    if not s["enabled"]:
        return
    models = config["models"]
    for m in s["models"] or []:
        if m not in models:
            problems.append(f"config key 'steering.models': {m!r} is not a key of 'models'")
        elif models[m]["source"] == "anthropic":
            problems.append(f"config key 'steering.models': {m!r} is a hosted model (no "
                            "activations to steer)")
    sources, concepts = s["sources"], s["concepts"]
    for key, value in (("layers.source", s["layers"]["source"]),
                       ("profile.source", s["profile"]["source"])):
        if value not in sources:
            problems.append(f"config key 'steering.{key}': {value!r} is not in "
                            f"steering.sources {sources}")
    for src in s["random"]["sources"]:
        if src not in sources:
            problems.append(f"config key 'steering.random.sources': {src!r} is not in "
                            f"steering.sources {sources}")
    for v in s["raw"]["vectors"] if s["raw"]["enabled"] else []:
        concept, _, source = v.rpartition("_")
        if concept not in concepts or source not in sources:
            problems.append(f"config key 'steering.raw.vectors': {v!r} is not a fitted vector "
                            f"of this config (concepts {concepts}, sources {sources})")
    if s["layers"]["select"] == "list" and not s["layers"]["list"]:
        problems.append("config key 'steering.layers.list': select is 'list' but no layers "
                        "are listed")
    if s["layers"]["split"] == "keyword_hard" and s["layers"]["source"] != "ooc":
        problems.append("config key 'steering.layers.split': keyword_hard exists for OOC "
                        "pairs only")
    if s["ic"]["low"] >= s["ic"]["high"]:
        problems.append("config key 'steering.ic.low': must be below steering.ic.high")
    _check_quantiles(s["ic"].get("quantiles"), "steering.ic.quantiles", problems)
    m = s["profile"]["multiplier"]
    if m not in s["multipliers"] or -m not in s["multipliers"]:
        problems.append(f"config key 'steering.profile.multiplier': {m} and {-m} must both be "
                        f"in steering.multipliers {s['multipliers']}")
    if s["fitting"]["min_pairs"] > s["ic"]["n_train"] and "ic" in sources:
        problems.append("config key 'steering.fitting.min_pairs': larger than steering.ic."
                        "n_train, so IC vectors could never be fitted")
    if s["fitting"]["min_pairs"] > s["ooc"]["splits"]["train"] and "ooc" in sources:
        problems.append("config key 'steering.fitting.min_pairs': larger than steering.ooc."
                        "splits.train, so OOC vectors could never be fitted")
    _check_simulated(config, base, problems)
    for name in STEERING_MATERIALS:
        need_file(f"steering.materials_dir ({name})", str(Path(s["materials_dir"]) / name))
    if s["raw"]["enabled"]:
        need_file("steering.raw.rubric", s["raw"]["rubric"])
    for pairset, path in s["external_pairs"].items():
        need_file(f"steering.external_pairs.{pairset}", path)


def _check_quantiles(q: Mapping[str, float] | None, key: str, problems: list[str]) -> None:
    if q and q["low"] >= q["high"]:
        problems.append(f"config key '{key}.low': {q['low']} must be below {key}.high "
                        f"({q['high']})")


def _check_simulated(config: Mapping[str, Any], base: Path, problems: list[str]) -> None:
    """A steered simulated model: its policy plants activations for every steered concept
    (a ``steering`` section), and its own OOC and IC pair counts (``models.<m>.ooc`` /
    ``.ic``) can be fitted."""
    import yaml

    s = config["steering"]
    steered = s["models"] if s["models"] is not None else list(config["models"])
    for m in steered:
        spec = config["models"].get(m)
        if spec is None or spec["source"] != "simulated":
            continue
        ooc, ic = spec.get("ooc") or {}, spec.get("ic") or {}
        for source, train, key in (("ooc", (ooc.get("splits") or {}).get("train"),
                                    "ooc.splits.train"),
                                   ("ic", ic.get("n_train"), "ic.n_train")):
            if train is not None and source in s["sources"] and s["fitting"]["min_pairs"] > train:
                problems.append(f"config key 'models.{m}.{key}': {train} is below "
                                f"steering.fitting.min_pairs ({s['fitting']['min_pairs']})")
        _check_quantiles(ic.get("quantiles"), f"models.{m}.ic.quantiles", problems)
        path = Path(spec["policy"])
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            continue  # reported by the models check
        doc = yaml.safe_load(path.read_text()) or {}
        planted = (doc.get("steering") or {}).get("concepts") if isinstance(doc, dict) else None
        missing = [c for c in s["concepts"] if not isinstance(planted, dict) or c not in planted]
        if missing:
            problems.append(f"config key 'models.{m}.policy': {m!r} is steered (steering."
                            f"models), but its policy {spec['policy']} plants no activations "
                            f"for concept(s) {', '.join(missing)} (section steering.concepts)")
