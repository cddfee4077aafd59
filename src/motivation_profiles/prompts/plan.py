"""The prompt-intervention and calibration part of the DAG, derived from the config.

Condition names (``claims.prompt_condition``):

- ``prompt-{intervention}-{strength}``: the base model with one claim appended to its system
  prompt; compared against ``baseline``;
- ``sdf-{branch}@prompt-{intervention}-{strength}``: the same claim on an SDF checkpoint
  (Appendix C.1 calibration); compared against ``sdf-{branch}`` (the checkpoint without claim).

Which checkpoints are calibrated is decided from results (``metrics.calibration``), so those
conditions are scheduled behind the ``calibration_select`` checkpoint rule.

Every condition's rollout spec (``condition_spec``) carries the claim *text*, not the claims file,
as a rule parameter: editing one claim reruns exactly the rollouts that use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from motivation_profiles.prompts.claims import load_claims, parse_prompt_condition, prompt_condition
from motivation_profiles.sdf.materials import UNIVERSE_RE, split_universe
from motivation_profiles.sdf.organism import arm_models
from motivation_profiles.sdf.plan import SDFPlan

SEPARATOR = "@"


def split_condition(condition: str) -> tuple[str | None, str | None]:
    """``sdf-B1_amp@prompt-A1_amp-weak`` -> (``sdf-B1_amp``, ``prompt-A1_amp-weak``);
    ``prompt-...`` -> (None, ``prompt-...``); anything else -> (condition, None)."""
    if SEPARATOR in condition:
        head, _, tail = condition.partition(SEPARATOR)
        return head, tail
    if condition.startswith("prompt-"):
        return None, condition
    return condition, None


DIRECT_DEFAULT = ("standard",)
"""``calibration.direct`` when absent: the directness levels of the paper's "direct SDF
variants" (Appendix C.1). A project choice: ``standard`` documents state the key fact plainly
(the main SDF run); ``weak`` ones only imply it (indirect); ``strong`` is the Appendix B.2
sweep's emphatic level (add it to widen the candidates)."""


def direct_variants(branches: Sequence[str], levels: Sequence[str] = DIRECT_DEFAULT
                    ) -> list[str]:
    """The calibration candidates among SDF ``branches``: the amplify interventions (the paper
    retains only + checkpoints: Llama-3.1-70B-A2+/B1+, Qwen-2.5-72B-A1+/A2+/B1+) at the
    directness ``levels``, original naming (no ``+self``), in the order of ``branches``."""
    out = []
    for b in branches:
        if not UNIVERSE_RE.fullmatch(b):
            continue  # +self branches, anything else
        intervention, strength = split_universe(b)
        if intervention and intervention.endswith("_amp") and strength in levels:
            out.append(b)
    return out


def hosted_models(config: Mapping[str, Any]) -> list[str]:
    """Models served by a hosted API (prompt-only: no weights, so no SDF or steering)."""
    return [m for m, s in config["models"].items() if s["source"] == "anthropic"]


@dataclass(frozen=True)
class PromptPlan:
    enabled: bool
    models: tuple[str, ...]
    interventions: tuple[str, ...]
    strengths: tuple[str, ...]
    claims: Mapping[tuple[str, str], str]
    calibration_enabled: bool
    calibration_models: tuple[str, ...]
    calibration: Mapping[str, Any]
    sdf: SDFPlan

    @classmethod
    def from_config(cls, config: Mapping[str, Any], sdf: SDFPlan) -> PromptPlan:
        section = config["prompt_interventions"]
        cal = config["calibration"]
        enabled = bool(section["enabled"])
        models = arm_models(config, section["models"], local_only=False)
        interventions = tuple(section["interventions"])
        strengths = tuple(section["strengths"])
        claim_strengths = tuple(dict.fromkeys([*strengths, *cal["strengths"]]))
        claims = (load_claims(section["claims_dir"], interventions, claim_strengths)
                  if enabled else {})
        cal_on = enabled and bool(cal["enabled"]) and sdf.enabled
        cal_models = tuple(m for m in models if m in sdf.models) if cal_on else ()
        return cls(enabled=enabled, models=tuple(models) if enabled else (),
                   interventions=interventions, strengths=strengths, claims=claims,
                   calibration_enabled=cal_on, calibration_models=cal_models,
                   calibration=cal, sdf=sdf)

    # ------------------------------------------------------------------ conditions
    def conditions(self, model: str) -> list[str]:
        """The prompt conditions of the base model (every strength x intervention)."""
        if model not in self.models:
            return []
        return [prompt_condition(i, s) for s in self.strengths for i in self.interventions]

    def candidates(self) -> list[str]:
        """SDF branches the calibration rule may select: ``calibration.candidates`` when set,
        else the direct variants (:func:`direct_variants` at ``calibration.direct``)."""
        branches = self.sdf.branches()
        listed = self.calibration["candidates"]
        if listed is None:
            return direct_variants(branches, self.calibration.get("direct", DIRECT_DEFAULT))
        return [b for b in listed if b in branches]

    def calibration_conditions(self, checkpoints: Sequence[str]) -> list[str]:
        """Rollout conditions of the calibration: the base model without and with each claim
        (at the calibration strengths), then each checkpoint alone and with each claim."""
        out = ["baseline"] + [prompt_condition(i, s) for s in self.calibration["strengths"]
                              for i in self.interventions]
        for c in checkpoints:
            out.append(f"sdf-{c}")
            out += [prompt_condition(i, s, c) for s in self.calibration["strengths"]
                    for i in self.interventions]
        return out

    # ------------------------------------------------------------------ one condition
    def claim_of(self, condition: str) -> dict[str, Any]:
        """The claim a condition appends (``claim`` None for conditions without one)."""
        _, prompt_part = split_condition(condition)
        if prompt_part is None:
            return {"claim": None, "intervention": None, "strength": None}
        parsed = parse_prompt_condition(prompt_part)
        key = (parsed["intervention"], parsed["strength"])
        if key not in self.claims:
            raise ValueError(
                f"condition {condition!r}: no claim for {key[0]} at strength {key[1]} in this "
                f"config (prompt_interventions.interventions / strengths, calibration.strengths)")
        return {"claim": self.claims[key], "intervention": key[0], "strength": key[1]}

    def condition_spec(self, condition: str, *, model: str) -> dict[str, Any]:
        """What a condition changes in a rollout: adapter, AI-name replacement, claim."""
        sdf_part, _ = split_condition(condition)
        spec = (self.sdf.condition_spec(sdf_part, model=model) if sdf_part is not None
                else {"adapter": None, "rename": None})
        return {**spec, **self.claim_of(condition)}

    def figures(self) -> list[str]:
        if not self.models:
            return []
        names = ["profile_plane", "prompt_strength_ablation"]
        if len(self.strengths) < 2:
            names.remove("prompt_strength_ablation")
        if self.calibration_models:
            names += ["prompt_calibration", "calibration_signal"]
        return names
