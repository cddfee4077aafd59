"""Every job a config's default target asks for, from the plans the Snakefile uses.

``planned_jobs(config)`` lists (rule, model, target) for each job ``snakemake -n`` lists (the
same functions of ``SDFPlan``, ``PromptPlan`` and ``SteeringPlan`` that
``workflow/rules/common.smk`` calls, combined the same way; ``tests/planner/test_jobs.py``
checks the counts against the dry run of the shipped configs). The calibration conditions,
which the DAG knows only once the ``calibration_select`` checkpoint has run, are listed apart
by ``calibration_jobs`` as an upper bound (every candidate selected, up to
``calibration.max_per_family`` per family).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from motivation_profiles.prompts.plan import PromptPlan
from motivation_profiles.sdf.plan import SDFPlan
from motivation_profiles.steering.names import parse_steer_condition
from motivation_profiles.steering.plan import SteeringPlan


@dataclass(frozen=True)
class Job:
    rule: str
    model: str | None = None
    target: str | None = None  # condition, universe / branch, pair set, vector or figure


@dataclass
class Plans:
    """The plans of one config, built as ``common.smk`` builds them."""

    config: Mapping[str, Any]
    sdf: SDFPlan = field(init=False)
    prompt: PromptPlan = field(init=False)
    steer: SteeringPlan = field(init=False)

    def __post_init__(self) -> None:
        self.sdf = SDFPlan.from_config(self.config)
        self.prompt = PromptPlan.from_config(self.config, self.sdf)
        self.steer = SteeringPlan.from_config(self.config)

    @property
    def models(self) -> list[str]:
        return list(self.config["models"])

    def is_hosted(self, model: str) -> bool:
        return self.config["models"][model]["source"] == "anthropic"

    def conditions_for(self, model: str) -> list[str]:
        """common.smk: conditions_for."""
        return (list(self.config["rollouts"]["conditions"]) + self.sdf.conditions(model)
                + self.prompt.conditions(model) + self.steer.steer_conditions(model))

    def raw_conditions(self, model: str) -> list[str]:
        return self.steer.raw_conditions(model)

    def figure_names(self) -> list[str]:
        """common.smk: figure_names."""
        def has_pair(interventions) -> bool:
            return any(f"{p}_amp" in interventions and f"{p}_sup" in interventions
                       for p in ("A1", "A2", "B1", "B2"))

        names = ["baseline_compliance"] + self.sdf.figures() + self.prompt.figures()
        if not has_pair(self.prompt.interventions if self.prompt.models else []):
            names = [n for n in names if n != "profile_plane"]
        if (self.sdf.models and has_pair(self.sdf.interventions)
                and "profile_plane" not in names):
            names.append("profile_plane")
        if (self.steer.models and has_pair(self.steer.profile_interventions())
                and "profile_plane" not in names):
            names.append("profile_plane")
        return names + ["judge_scores"] + self.steer.figures(self.sdf.models)

    def calibration_candidates(self, model: str) -> list[str]:
        """Upper bound of the checkpoints calibration_select keeps for ``model``: every
        candidate, at most ``max_per_family`` per family (A, B)."""
        if model not in self.prompt.calibration_models:
            return []
        cap = self.config["calibration"]["max_per_family"]
        out: list[str] = []
        for family in ("A", "B"):
            members = [c for c in self.prompt.candidates() if c.startswith(family)]
            out += members if cap is None else members[:cap]
        return out


FIGURE_RULES = {"baseline_compliance": "figure_baseline"}


def planned_jobs(config: Mapping[str, Any]) -> list[Job]:
    """The jobs of the default target (``rule all``), as the dry run lists them."""
    p = Plans(config)
    jobs: list[Job] = []
    add = jobs.append
    judge = config["judge"]
    gen = config["sdf"]["generator"]
    st = config["steering"]

    # models and goals
    needed = {m for m in p.models if not p.is_hosted(m)}
    if judge["backend"] == "local":
        needed.add(judge["model"])
    if p.sdf.models and gen["backend"] == "local":
        needed.add(gen["model"])
    for m in p.models:
        if m in needed:
            add(Job("prepare_model", m))
    if config["goals"]["path"] is None:
        add(Job("advbench"))
    add(Job("goals"))

    # SDF
    if p.sdf.models:
        for u in p.sdf.universes():
            add(Job("generate_documents", None, u))
        for m in p.sdf.models:
            for b in p.sdf.branches():
                add(Job("sdf_dataset", m, b))
                add(Job("train_lora", m, b))
            for b in p.sdf.belief_branches():
                add(Job("belief_check", m, b))
            add(Job("sdf_profile", m))

    # rollouts, metrics, judge
    for m in p.models:
        for c in p.conditions_for(m) + p.raw_conditions(m):
            add(Job("rollouts", m, c))
        for c in p.conditions_for(m):
            add(Job("metrics", m, c))
            add(Job("judge", m, c))
        add(Job("metrics_table", m))
        for c in p.raw_conditions(m):
            add(Job("judge_raw", m, c))

    # prompt profiles and calibration
    for m in p.prompt.models:
        add(Job("prompt_profile", m))
    for m in p.prompt.calibration_models:
        add(Job("calibration_select", m))
        add(Job("calibration", m))
    if p.prompt.models or p.sdf.models or p.steer.models:
        add(Job("profiles"))

    # steering
    names = p.figure_names()
    for m in p.steer.models:
        for ps in p.steer.pairsets():
            add(Job("ooc_pairs" if ps.startswith("ooc_") else "ic_pairs", m, ps))
            add(Job("activations", m, ps))
        for v in p.steer.fitted_vectors():
            add(Job("fit_vectors", m, v))
        for v in p.steer.random_vectors():
            add(Job("random_vectors", m, v))
        add(Job("steering_layers", m))
        add(Job("steering_summary", m))
        if st["raw"]["enabled"]:
            add(Job("raw_summary", m))
        add(Job("steering_profile", m))
        if any(n.startswith("token_heatmap_") for n in names):
            add(Job("token_cosines", m))
    if "sdf_steering_alignment" in names:
        for m in p.steer.alignment_models(p.sdf.models):
            add(Job("sdf_alignment", m))

    for name in names:
        add(Job(FIGURE_RULES.get(name, f"figure_{name}"), None, name))
    add(Job("browser"))
    add(Job("all"))
    return jobs


def calibration_jobs(config: Mapping[str, Any]) -> list[Job]:
    """Jobs that appear once ``calibration_select`` ran (not in a first dry run): rollouts,
    metrics and judge of every calibration condition, as an upper bound."""
    p = Plans(config)
    jobs = []
    for m in p.prompt.calibration_models:
        static = set(p.conditions_for(m))
        for c in p.prompt.calibration_conditions(p.calibration_candidates(m)):
            if c in static:
                continue
            jobs += [Job("rollouts", m, c), Job("metrics", m, c), Job("judge", m, c)]
    return jobs


def is_steered(condition: str) -> bool:
    return parse_steer_condition(condition) is not None


__all__ = ["Job", "Plans", "calibration_jobs", "planned_jobs"]
