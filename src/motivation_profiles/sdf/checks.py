"""Config checks of the SDF stage (called by config validation)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from motivation_profiles.sdf.materials import NOISE, MaterialsError, load_universe


def check_config(config: Mapping[str, Any], base: Path, problems: list[str], need_file) -> None:
    sdf = config["sdf"]
    if not sdf["enabled"]:
        return
    from motivation_profiles.sdf.plan import SDFPlan

    models = config["models"]
    for m in sdf["models"] or []:
        if m not in models:
            problems.append(f"config key 'sdf.models': {m!r} is not a key of 'models'")
        elif models[m]["source"] == "anthropic":
            problems.append(f"config key 'sdf.models': {m!r} is a hosted model (no weights to "
                            "fine-tune)")
    for m in sdf["training"]["per_model"]:
        if m not in models:
            problems.append(f"config key 'sdf.training.per_model.{m}': not a key of 'models'")
    gen = sdf["generator"]
    if gen["backend"] == "local" and gen["model"] not in models:
        problems.append(f"config key 'sdf.generator.model': {gen['model']!r} must be a key of "
                        "'models' when sdf.generator.backend is local")
    if problems:
        return
    plan = SDFPlan.from_config(config)
    for m in plan.models:
        try:
            plan.training(m)
        except ValueError as exc:
            problems.append(f"config key 'sdf.training.effective_batch_size': {exc}")
    external = sdf["external_documents"]
    for universe in plan.universes():
        if universe in external and isinstance(external[universe], str):
            need_file(f"sdf.external_documents.{universe}", external[universe])
        if not (universe in external and universe == NOISE):  # belief_check reads it too
            _check_universe(universe, Path(sdf["universes_dir"]), base, problems)
    for u in external:
        if u not in plan.universes():
            problems.append(f"config key 'sdf.external_documents.{u}': {u!r} is not a universe "
                            "this config uses")
    for name in ("doc_types.txt", "doc_ideas.txt", "document.txt", "revision.txt"):
        need_file(f"sdf.generator.prompts_dir ({name})",
                  str(Path(gen["prompts_dir"]) / name))
    if any(models[m].get("gpus", 0) > 1 for m in plan.models):
        need_file("sdf.training.accelerate_config", sdf["training"]["accelerate_config"])


def _check_universe(universe: str, directory: Path, base: Path, problems: list[str]) -> None:
    """The universe file exists and passes ``load_universe`` (the checks generate_documents and
    belief_check apply), so a broken file fails the config, not a job hours into a run."""
    key = f"config key 'sdf.universes_dir ({universe})'"
    path = directory / f"{universe}.yaml"
    resolved = path if path.is_absolute() else base / path
    if not resolved.is_file():
        problems.append(f"{key}: file {str(path)!r} does not exist")
        return
    try:
        load_universe(resolved)
    except MaterialsError as exc:
        problems.append(f"{key}: {exc}")
    except UnicodeDecodeError as exc:
        problems.append(f"{key}: {resolved}: not UTF-8 text ({exc})")
    except OSError as exc:
        problems.append(f"{key}: {resolved}: cannot be read ({exc})")
