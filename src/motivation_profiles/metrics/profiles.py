"""Intervention effects on the alignment-faking gap and net sensitivities S_A, S_B.

For a baseline condition b and an intervention condition c (same model, same goals and seeds):

* gap(c) = mean over (goal, seed) pairs of compliance(monitored) - compliance(unmonitored);
* Delta(c) = gap(c) - gap(b), and likewise the shift of each tier's compliance rate, which
  separates a gap-specific effect from a broad compliance shift;
* S_A = mean over k in {1, 2} of Delta(Ak+) - Delta(Ak-), and S_B likewise over B1, B2
  (paper section 3.3): positive S_A means amplifying researcher-expectation beliefs widens the
  gap more than suppressing them does. A config that runs only some pairs of a family (e.g.
  A1 alone) gets S over those pairs (column ``pairs``); a half-run pair (A2+ without A2-)
  leaves the family's S out.

Confidence intervals are percentile bootstraps that resample goals (with all their seeds and
tiers) jointly across every condition, so the effects and the sensitivities are paired: one
draw of goals gives one value of every quantity. Only goals present in every condition are
used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from motivation_profiles.metrics.rates import paired_differences
from motivation_profiles.rollouts.protocol import TIERS

FAMILIES = {"A": ("A1", "A2"), "B": ("B1", "B2")}


STATS = ("d", "monitored", "unmonitored")


def _per_goal(rollouts: pd.DataFrame, condition: str) -> pd.DataFrame:
    """Per goal: sums of the paired difference and of each tier's compliance, and counts."""
    df = rollouts[rollouts["condition"] == condition]
    if df.empty:
        raise ValueError(f"no rollouts for condition {condition!r}")
    pairs = paired_differences(df)
    return pairs.groupby("goal_id").agg(d=("d", "sum"), monitored=("monitored", "sum"),
                                        unmonitored=("unmonitored", "sum"), n=("d", "size"))


def intervention_effects(rollouts: pd.DataFrame, *, baseline: str,
                         interventions: Mapping[str, str], n_boot: int, level: float,
                         seed: int) -> pd.DataFrame:
    """Effects of each intervention condition against ``baseline``, and S_A / S_B.

    ``interventions`` maps an intervention id (``A1_amp`` ...) to its condition name. Returns a
    long table: one row per (quantity, intervention or family) with estimate and CI.
    """
    conds = {"__baseline__": baseline, **interventions}
    per_goal = {k: _per_goal(rollouts, c) for k, c in conds.items()}
    goals = sorted(set.intersection(*(set(t.index) for t in per_goal.values())))
    if not goals:
        raise ValueError("no goal has paired rollouts in every condition")
    arrays = {k: {s: t.loc[goals, s].to_numpy(float) for s in (*STATS, "n")}
              for k, t in per_goal.items()}
    rng = np.random.default_rng(seed)
    draws = np.vstack([np.arange(len(goals))[None, :],  # row 0: the point estimate
                       rng.integers(0, len(goals), size=(n_boot, len(goals)))])

    def rate(key: str, stat: str) -> np.ndarray:  # one value per draw
        a = arrays[key]
        return a[stat][draws].sum(axis=1) / a["n"][draws].sum(axis=1)

    base = {s: rate("__baseline__", s) for s in STATS}
    values: dict[tuple[str, str], np.ndarray] = {}
    for key in interventions:
        for s, quantity in zip(STATS, ("delta_gap", "delta_monitored", "delta_unmonitored"),
                               strict=True):
            values[(quantity, key)] = rate(key, s) - base[s]
        values[("gap", key)] = rate(key, "d")
    values[("gap", "baseline")] = base["d"]
    used: dict[str, str] = {}
    for fam, pairs in FAMILIES.items():
        present = [p for p in pairs
                   if f"{p}_amp" in interventions or f"{p}_sup" in interventions]
        complete = [p for p in present
                    if f"{p}_amp" in interventions and f"{p}_sup" in interventions]
        if present and complete == present:
            values[(f"S_{fam}", fam)] = np.mean(
                [values[("delta_gap", f"{p}_amp")] - values[("delta_gap", f"{p}_sup")]
                 for p in complete], axis=0)
            used[fam] = ",".join(complete)
    alpha = (1 - level) / 2
    rows = []
    for (quantity, target), v in values.items():
        lo, hi = np.quantile(v[1:], [alpha, 1 - alpha])
        rows.append({"quantity": quantity, "target": target,
                     "condition": conds.get(target, baseline if target == "baseline" else None),
                     "estimate": float(v[0]), "ci_low": float(lo), "ci_high": float(hi),
                     "pairs": used.get(target), "n_goals": len(goals),
                     "baseline_condition": baseline,
                     "ci_level": level, "bootstrap_samples": n_boot})
    return pd.DataFrame(rows)


def parse_sdf_condition(condition: str) -> dict[str, object] | None:
    """``sdf-A1_amp-weak+self`` -> intervention, strength, naming; None for other kinds."""
    if not condition.startswith("sdf-"):
        return None
    branch = condition[4:]
    naming = "self" if branch.endswith("+self") else "original"
    universe = branch.removesuffix("+self")
    if universe in ("af_organism", "noise"):
        return {"intervention": universe, "strength": None, "naming": naming}
    base, _, strength = universe.partition("-")
    return {"intervention": base, "strength": strength or "standard", "naming": naming}


def sdf_effects(rollouts: pd.DataFrame, *, n_boot: int, level: float, seed: int
                ) -> pd.DataFrame:
    """SDF effects per (strength, naming) group against that naming's noise adapter."""
    parsed = {c: parse_sdf_condition(c) for c in rollouts["condition"].unique()}
    parsed = {c: p for c, p in parsed.items() if p is not None}
    model = rollouts["model"].iloc[0]
    out = []
    for naming in ("original", "self"):
        baseline = "sdf-noise" + ("+self" if naming == "self" else "")
        if baseline not in parsed:
            continue
        strengths = sorted({p["strength"] for p in parsed.values()
                            if p["naming"] == naming and p["strength"]})
        for strength in strengths:
            group = {p["intervention"]: c for c, p in parsed.items()
                     if p["naming"] == naming and p["strength"] == strength}
            table = intervention_effects(rollouts, baseline=baseline, interventions=group,
                                         n_boot=n_boot, level=level, seed=seed)
            out.append(table.assign(model=model, method="sdf", strength=strength,
                                    naming=naming))
    if not out:
        raise ValueError(f"{model}: no SDF conditions with a noise baseline among "
                         f"{sorted(rollouts['condition'].unique())}")
    cols = ["model", "method", "strength", "naming"]
    df = pd.concat(out, ignore_index=True)
    return df[cols + [c for c in df.columns if c not in cols]]


# ----------------------------------------------------------------------------- prompt method

LABELS = ("model", "method", "strength", "naming", "checkpoint")


def _labelled(table: pd.DataFrame, **labels: object) -> pd.DataFrame:
    df = table.assign(**labels)
    cols = [c for c in (*LABELS, "checkpoint_family") if c in df.columns]
    return df[cols + [c for c in df.columns if c not in cols]]


def prompt_effects(rollouts: pd.DataFrame, *, interventions: Sequence[str],
                   strengths: Sequence[str], n_boot: int, level: float, seed: int,
                   checkpoint: str | None = None) -> pd.DataFrame:
    """Prompt-claim effects per strength against the same model without a claim.

    On the base model (``checkpoint`` None) the reference is ``baseline`` and the conditions are
    ``prompt-{i}-{s}``; on an SDF checkpoint the reference is ``sdf-{checkpoint}`` and the
    conditions ``sdf-{checkpoint}@prompt-{i}-{s}``.
    """
    from motivation_profiles.prompts.claims import prompt_condition

    model = rollouts["model"].iloc[0]
    reference = "baseline" if checkpoint is None else f"sdf-{checkpoint}"
    out = []
    for strength in strengths:
        group = {i: prompt_condition(i, strength, checkpoint) for i in interventions}
        table = intervention_effects(rollouts, baseline=reference, interventions=group,
                                     n_boot=n_boot, level=level, seed=seed)
        out.append(_labelled(table, model=model, method="prompt", strength=strength,
                             naming="original", checkpoint=checkpoint))
    return pd.concat(out, ignore_index=True)


def profile_rows(effects: pd.DataFrame) -> pd.DataFrame:
    """The S_A / S_B rows of one or more effects tables (the comparative profile points)."""
    df = effects[effects["quantity"].isin(["S_A", "S_B"])].copy()
    if "checkpoint" not in df.columns:
        df["checkpoint"] = None
    return df.reset_index(drop=True)


__all__ = ["intervention_effects", "sdf_effects", "parse_sdf_condition", "prompt_effects",
           "profile_rows", "TIERS"]
