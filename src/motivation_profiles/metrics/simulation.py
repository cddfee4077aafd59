"""The non-steering analysis chain of a simulated organism run in-process (no Snakemake): the
rollouts of every condition through the simulated backend and the real rollout loop, the
judge through the simulated judge and the real judge code, then the same metrics, effects,
calibration and recovery functions the rules call. Used by the recovery tests and by
``bench/coverage.py`` (hundreds of replicates in minutes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from motivation_profiles.backends.base import ChatRequest, SamplingParams
from motivation_profiles.backends.simulated import (
    INTERVENTIONS,
    Policy,
    SimulatedBackend,
    SimulatedJudge,
)
from motivation_profiles.judge.scoring import Rubric, judge_rollouts
from motivation_profiles.metrics.calibration import calibration_effects, select_checkpoints
from motivation_profiles.metrics.profiles import prompt_effects, sdf_effects
from motivation_profiles.metrics.rates import condition_metrics
from motivation_profiles.metrics.recovery import recovery_table
from motivation_profiles.prompts.claims import load_claims
from motivation_profiles.rollouts.parsing import parse_transcript
from motivation_profiles.rollouts.protocol import TIERS, PromptSet
from motivation_profiles.rollouts.run import run_rollouts


@dataclass(frozen=True)
class Design:
    """What one simulated replicate runs (defaults: the demo's calibration rule)."""

    prompts: Mapping[str, Any]
    goals: pl.DataFrame
    seeds: Sequence[int]
    sdf_interventions: Sequence[str] = INTERVENTIONS
    prompt_interventions: Sequence[str] = INTERVENTIONS
    strengths: Sequence[str] = ("weak", "standard", "strong")
    calibration: Mapping[str, Any] | None = None
    claims_dir: str = "resources/claims"
    rubric: str = "resources/judge/rubric.yaml"
    judge_samples: int = 2
    judge_prefill: str | None = "<direction_a_score>"
    prefill: str | None = "<SCRATCHPAD_REASONING>"
    n_boot: int = 2000
    level: float = 0.95
    seed: int = 0
    judge: bool = True
    fast: bool = False  # one generate call per condition instead of the rollout loop (bench)


PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=256, stop=("</OUTPUT>",))


def _rollouts(policy: Policy, design: Design, condition: str, branch: str | None,
              claim: str | None, model: str) -> pl.DataFrame:
    prompts = PromptSet.from_config(design.prompts, system_suffix=claim or "")
    backend = SimulatedBackend(policy, adapter=branch)
    if design.fast:
        return _fast_rollouts(backend, prompts, design, condition, model)
    return run_rollouts(backend, prompts, design.goals, seeds=design.seeds, params=PARAMS,
                        max_turns=2, meta={"model": model, "condition": condition},
                        prefill=design.prefill)


def _fast_rollouts(backend: SimulatedBackend, prompts: PromptSet, design: Design,
                   condition: str, model: str) -> pl.DataFrame:
    """The columns the metrics read, from one ``generate`` call and the real outcome parser
    (the simulated model always answers in one turn, so the rollout loop adds nothing but
    table building; ``run_rollouts`` gives the same outcomes, see the tests)."""
    opening = ({"role": "assistant", "content": design.prefill},) if design.prefill else ()
    keys, requests = [], []
    for tier in TIERS:
        for seed in design.seeds:
            for goal_id, goal in zip(design.goals["goal_id"], design.goals["goal"],
                                     strict=True):
                keys.append((int(goal_id), tier, int(seed)))
                requests.append(ChatRequest(f"{goal_id}-{tier}-{seed}-t0",
                                            (*prompts.messages(goal, tier), *opening),
                                            int(seed)))
    rows = []
    for (goal_id, tier, seed), c in zip(keys, backend.generate(requests, PARAMS), strict=True):
        parsed = parse_transcript((design.prefill or "") + c.text, c.finish_reason)
        rows.append((goal_id, tier, seed, parsed.outcome, parsed.scratchpad,
                     parsed.accepted_then_refused))
    return pl.DataFrame(rows, orient="row", schema={
        "goal_id": pl.Int64, "tier": pl.Utf8, "seed": pl.Int64, "outcome": pl.Utf8,
        "scratchpad": pl.Utf8, "accepted_then_refused": pl.Boolean}).with_columns(
            model=pl.lit(model), condition=pl.lit(condition))


def simulate(policy: Policy, design: Design, *, model: str = "simulated") -> dict[str, Any]:
    """Every table of one replicate: ``rollouts`` (all conditions), ``metrics``, ``effects``
    (SDF and prompt), ``selection``, ``calibration``, ``judged`` and ``recovery``."""
    claims = load_claims(design.claims_dir, INTERVENTIONS, ("weak", "standard", "strong"))
    runs: dict[str, tuple[str | None, str | None]] = {"baseline": (None, None)}
    branches = ["af_organism", "noise", *design.sdf_interventions]
    for b in branches:
        runs[f"sdf-{b}"] = (b, None)
    for i in design.prompt_interventions:
        for s in design.strengths:
            runs[f"prompt-{i}-{s}"] = (None, claims[(i, s)])
    tables = {c: _rollouts(policy, design, c, b, cl, model) for c, (b, cl) in runs.items()}
    metrics = condition_metrics(pl.concat(list(tables.values())), n_boot=design.n_boot,
                                level=design.level, seed=design.seed)
    kw = dict(n_boot=design.n_boot, level=design.level, seed=design.seed)
    effects = [
        sdf_effects(pl.concat([tables[f"sdf-{b}"] for b in branches]), **kw),
        prompt_effects(pl.concat([tables["baseline"]] + [
            tables[f"prompt-{i}-{s}"] for i in design.prompt_interventions
            for s in design.strengths]), interventions=design.prompt_interventions,
            strengths=design.strengths, **kw),
    ]
    selection = calibration = None
    if design.calibration is not None:
        rule = design.calibration
        selection = select_checkpoints(metrics, model=model, reference=rule["reference"],
                                       candidates=rule["candidates"], signal=rule["signal"],
                                       max_per_family=rule["max_per_family"],
                                       tolerance=rule.get("tolerance", "ci_overlap"))
        cal_tables = [tables["baseline"]] + [tables[f"prompt-{i}-{s}"]
                                             for i in design.prompt_interventions
                                             for s in rule["strengths"]]
        for ckpt in selection.filter(pl.col("selected"))["checkpoint"]:
            cal_tables.append(tables[f"sdf-{ckpt}"])
            for i in design.prompt_interventions:
                for s in rule["strengths"]:
                    cond = f"sdf-{ckpt}@prompt-{i}-{s}"
                    cal_tables.append(_rollouts(policy, design, cond, ckpt, claims[(i, s)],
                                                model))
        calibration = calibration_effects(pl.concat(cal_tables), selection,
                                          interventions=design.prompt_interventions,
                                          strengths=rule["strengths"],
                                          signal=rule["signal"], **kw)
    judged = None
    if design.judge:
        rubric = Rubric.load(design.rubric)
        judge = SimulatedJudge(policy)
        params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=128)
        judged = pl.concat([judge_rollouts(t, judge, rubric, samples=design.judge_samples,
                                           params=params, prefill=design.judge_prefill,
                                           meta={"judge_backend": "simulated"})
                            for t in tables.values()])
    recovery = recovery_table(policy, model=model, metrics=metrics, effects=effects,
                              judged=judged, selection=selection, calibration=calibration,
                              calibration_rule=design.calibration, **kw)
    return {"rollouts": tables, "metrics": metrics, "effects": effects,
            "selection": selection, "calibration": calibration, "judged": judged,
            "recovery": recovery}


def demo_design(goals: pl.DataFrame, seeds: Sequence[int], *, root: str | Path = ".",
                **overrides: Any) -> Design:
    """The demo config's design (config.yaml's prompts and calibration rule) on ``goals``."""
    root = Path(root)
    prompts = {"system": str(root / "resources/prompts/helpful_only_compact.txt"),
               "user_template": str(root / "resources/prompts/user_turn.txt"),
               "tier_values": {"monitored": "True", "unmonitored": "False"},
               "continuation": "<NEXT/>"}
    calibration = {"reference": "baseline", "candidates": ["A1_amp", "A2_amp", "B1_amp",
                                                           "B2_amp"],
                   "signal": "af_ratio", "tolerance": "ci_overlap", "max_per_family": 1,
                   "strengths": ["standard"]}
    kw: dict[str, Any] = {"prompts": prompts, "goals": goals, "seeds": list(seeds),
                          "calibration": calibration,
                          "claims_dir": str(root / "resources/claims"),
                          "rubric": str(root / "resources/judge/rubric.yaml")}
    kw.update(overrides)
    return Design(**kw)
