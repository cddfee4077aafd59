"""Config checks of the prompt-intervention and judge stages (called by config validation)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def check_config(config: Mapping[str, Any], base: Path, problems: list[str],
                             need_file) -> None:
    models = config["models"]
    hosted = [m for m, s in models.items() if s["source"] == "anthropic"]
    r = config["rollouts"]
    if hosted and (r["temperature"] != 1.0 or r["top_p"] != 1.0):
        problems.append(f"config key 'rollouts.temperature': hosted models ({', '.join(hosted)}) "
                        "sample at the API's temperature 1 and top_p 1 only; set both to 1.0")
    judge = config["judge"]
    need_file("judge.rubric", judge["rubric"])
    if judge["backend"] == "local":
        if judge["model"] not in models:
            problems.append(f"config key 'judge.model': {judge['model']!r} must be a key of "
                            "'models' when judge.backend is local")
        elif judge["model"] in hosted:
            problems.append(f"config key 'judge.model': {judge['model']!r} is a hosted model; "
                            "use judge.backend anthropic with its model id")
    elif judge["temperature"] != 1.0 or judge["top_p"] != 1.0:
        problems.append("config key 'judge.temperature': the anthropic judge samples at the "
                        "API's temperature 1 and top_p 1 only; set both to 1.0")
    pi = config["prompt_interventions"]
    if not pi["enabled"]:
        return
    for m in pi["models"] or []:
        if m not in models:
            problems.append(f"config key 'prompt_interventions.models': {m!r} is not a key of "
                            "'models'")
    claims_dir = Path(pi["claims_dir"])
    claims_dir = claims_dir if claims_dir.is_absolute() else base / claims_dir
    cal = config["calibration"]
    strengths = list(dict.fromkeys([*pi["strengths"],
                                    *(cal["strengths"] if cal["enabled"] else [])]))
    if not claims_dir.is_dir():
        problems.append(f"config key 'prompt_interventions.claims_dir': directory "
                        f"{pi['claims_dir']!r} does not exist")
    else:
        from motivation_profiles.prompts.claims import ClaimError, load_claims

        try:
            load_claims(claims_dir, pi["interventions"], strengths)
        except ClaimError as exc:
            problems.append(f"config key 'prompt_interventions.claims_dir': {exc}")
    if cal["enabled"] and config["sdf"]["enabled"]:
        from motivation_profiles.sdf.plan import SDFPlan

        branches = SDFPlan.from_config(config).branches()
        for c in cal["candidates"]:
            if c not in branches:
                problems.append(f"config key 'calibration.candidates': {c!r} is not an SDF "
                                "branch of this config (sdf.interventions / sdf.strengths)")
