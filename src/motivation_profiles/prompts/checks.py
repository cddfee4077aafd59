"""Config checks of the prompt-intervention and judge stages (called by config validation)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from motivation_profiles.rollouts.checks import Variant


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
        from motivation_profiles.prompts.plan import DIRECT_DEFAULT, direct_variants
        from motivation_profiles.sdf.plan import SDFPlan

        branches = SDFPlan.from_config(config).branches()
        for c in cal["candidates"] or []:
            if c not in branches:
                problems.append(f"config key 'calibration.candidates': {c!r} is not an SDF "
                                "branch of this config (sdf.interventions / sdf.strengths)")
        direct = cal.get("direct", DIRECT_DEFAULT)
        if cal["candidates"] is None and len(direct_variants(branches, direct)) < 2:
            problems.append(
                f"config key 'calibration.direct': {list(direct)} selects "
                f"{direct_variants(branches, direct)} as the direct variants; calibration "
                "needs an A- and a B-family amplify branch at those levels (sdf.interventions "
                "/ sdf.strengths), or an explicit calibration.candidates list")


def prompt_variants(config: Mapping[str, Any], base: Path) -> dict[str, list[Variant]]:
    """model -> the distinct AF system prompts its rollout conditions use: the baseline's, each
    SDF branch's (the role-play AI-name replacement), each prompt condition's claim and, where
    calibration may run, each claim on each candidate checkpoint. Each variant names the first
    condition that uses it. Call on a config that passed the other checks (claims load)."""
    from motivation_profiles.prompts.plan import PromptPlan
    from motivation_profiles.sdf.plan import SDFPlan

    pi = dict(config["prompt_interventions"])
    claims_dir = Path(pi["claims_dir"])
    pi["claims_dir"] = str(claims_dir if claims_dir.is_absolute() else base / claims_dir)
    sdf = SDFPlan.from_config(config)
    plan = PromptPlan.from_config({**config, "prompt_interventions": pi}, sdf)
    out: dict[str, list[Variant]] = {}
    for model in config["models"]:
        conditions = ["baseline", *sdf.conditions(model), *plan.conditions(model)]
        if model in plan.calibration_models:
            conditions += plan.calibration_conditions(plan.candidates())
        seen: dict[tuple[Any, Any], Variant] = {}
        for condition in conditions:
            spec = plan.condition_spec(condition, model=model)
            rename = tuple(spec["rename"]) if spec["rename"] else None
            seen.setdefault((rename, spec["claim"]), Variant(condition, rename, spec["claim"]))
        out[model] = list(seen.values())
    return out
