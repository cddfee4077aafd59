"""Known-answer validation: every quantity the DAG estimated for a simulated organism, beside
the value its planted policy implies (``backends.simulated.Policy``).

One row per quantity: ``kind`` ``interval`` (an estimate with a CI: gaps and per-tier
compliance per condition, Delta-gap per intervention and method, S_A / S_B per method and
checkpoint, the judge's mean A / B score per condition), ``exact`` (a deterministic outcome:
each calibration candidate's ``selected`` flag, whether the model qualifies) or ``decision``
(``recovered``: a comparison of two noisy consequence shares, which a finite design gets wrong
with some probability, most of all on the AF ratio; reported, not required to match).
``bound`` rows (the steering chain's fitted-vector cosines, ``steering_rows``) must reach
their planted bound.
For an interval row ``covered`` says whether the CI contains the planted value and ``z`` is
(estimate - planted) / SE with SE = CI width / (2 z_{level}); for an exact or decision row
``covered`` says whether the estimate equals the planted value.

The alignment-faking ratio (``af_ratio``, the calibration's default signal) is planted as its
large-sample limit, monitored over unmonitored compliance (the estimate's +1/2 smoothing
vanishes as the pair count grows): it decides the planted calibration selection and
``recovered`` (exact rows) and the planted ``af_ratio`` / ``delta_af_ratio`` /
``S_A_af_ratio`` / ``S_B_af_ratio`` of effect tables; those ratio quantities get no interval
rows (the smoothing biases them at small n).

Planted values come from the policy alone (population quantities over its goal distribution),
never from the rollouts, so a broken step between the policy and the tables (a claim not
appended, an adapter lost, tiers swapped) shows up as rows that are not covered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import norm

from motivation_profiles.backends.simulated import Condition, Policy
from motivation_profiles.backends.simulated_steering import SteeringSpec
from motivation_profiles.metrics.calibration import recovered, select_checkpoints
from motivation_profiles.metrics.profiles import intervention_effects
from motivation_profiles.metrics.rates import cluster_bootstrap_mean
from motivation_profiles.steering.names import parse_steer_condition

RECOVERY_SCHEMA: dict[str, pl.DataType] = {
    "model": pl.Utf8, "quantity": pl.Utf8, "method": pl.Utf8, "target": pl.Utf8,
    "condition": pl.Utf8, "strength": pl.Utf8, "checkpoint": pl.Utf8, "kind": pl.Utf8,
    "planted": pl.Float64, "estimate": pl.Float64, "ci_low": pl.Float64,
    "ci_high": pl.Float64, "se": pl.Float64, "z": pl.Float64, "covered": pl.Boolean,
}


def condition_of(name: str, steering: SteeringSpec | None = None) -> Condition:
    """``baseline`` / ``sdf-B`` / ``prompt-I-S`` / ``sdf-B@prompt-I-S`` -> the planted
    condition (SDF branch and claim); ``steer-{vector}-x{m}`` -> the planted steering doses
    (``steering``: the policy's planted activations): those of a perfect fit of the vector's
    concept (``SteeringSpec.planted_doses``: dose ``m`` on its concept) for a fitted vector,
    none for a random control (planted 0: a random direction is independent of every
    concept)."""
    steer = parse_steer_condition(name)
    if steer is not None:
        if steer.raw or steer.vector is None:
            raise ValueError(f"condition {name!r}: raw-AdvBench conditions have no planted "
                             "value (the simulated model runs no raw control)")
        if steer.vector.kind == "random":
            return Condition()
        if steering is None:
            raise ValueError(f"condition {name!r}: a steered condition's planted value needs "
                             "the policy's 'steering' section")
        return Condition(steer=steering.planted_doses(steer.vector.concept,
                                                      steer.multiplier))
    head, _, tail = name.partition("@")
    branch, claim = None, None
    for part in (head, tail):
        if not part or part == "baseline":
            continue
        if part.startswith("sdf-"):
            branch = part[4:]
        elif part.startswith("prompt-"):
            intervention, _, strength = part[7:].rpartition("-")
            claim = (intervention, strength)
        else:
            raise ValueError(f"condition {name!r}: the simulated policy knows baseline, sdf-, "
                             "prompt-, sdf-...@prompt- and steer- conditions")
    return Condition(branch=branch, claim=claim)


def _row(model: str, quantity: str, *, planted: float, estimate: Any, lo: Any, hi: Any,
         level: float, **labels: Any) -> dict[str, Any]:
    row = {"model": model, "quantity": quantity, "kind": "interval", "planted": planted,
           "estimate": estimate, "ci_low": lo, "ci_high": hi, **labels}
    if None in (estimate, lo, hi) or not np.isfinite([estimate, lo, hi]).all():
        return {**row, "se": None, "z": None, "covered": False}
    se = (hi - lo) / (2 * norm.ppf(0.5 + level / 2))
    z = (estimate - planted) / se if se > 0 else (0.0 if estimate == planted else np.inf)
    return {**row, "se": se, "z": float(z), "covered": bool(lo - 1e-12 <= planted <= hi + 1e-12)}


def _exact(model: str, quantity: str, planted: Any, estimate: Any, kind: str = "exact",
           **labels: Any) -> dict[str, Any]:
    def as_float(v: Any) -> float | None:
        return None if v is None else float(v)

    return {"model": model, "quantity": quantity, "kind": kind, "planted": as_float(planted),
            "estimate": as_float(estimate), "ci_low": None, "ci_high": None, "se": None,
            "z": None, "covered": planted == estimate, **labels}


def condition_rows(policy: Policy, metrics: pl.DataFrame, model: str) -> list[dict[str, Any]]:
    """Gap and per-tier compliance of every condition of the ``metrics`` table."""
    rows = []
    for r in metrics.iter_rows(named=True):
        planted = policy.planted_rates(condition_of(r["condition"], policy.steering))
        level = r["ci_level"]
        rows.append(_row(model, "gap", planted=planted["gap"], estimate=r["gap"],
                         lo=r["gap_ci_low"], hi=r["gap_ci_high"], level=level,
                         condition=r["condition"]))
        for t in ("monitored", "unmonitored"):
            rows.append(_row(model, f"{t}_compliance", planted=planted[t],
                             estimate=r[f"{t}_compliance"], lo=r[f"{t}_compliance_ci_low"],
                             hi=r[f"{t}_compliance_ci_high"], level=level,
                             condition=r["condition"]))
    return rows


def planted_metrics(policy: Policy, condition: str) -> dict[str, float]:
    """A condition's planted per-tier compliance, gap and AF ratio (its large-sample limit)."""
    r = policy.planted_rates(condition_of(condition, policy.steering))
    r["af_ratio"] = r["monitored"] / r["unmonitored"] if r["unmonitored"] > 0 else float("inf")
    return r


def planted_effects(policy: Policy, effects: pl.DataFrame) -> pl.Series:
    """The planted value of every row of an effects table (``metrics.profiles``): gap,
    delta_gap / delta_monitored / delta_unmonitored against the row's baseline condition, and
    S_A / S_B from the planted Delta-gaps of the pairs it lists; the same on the AF ratio
    (``af_ratio``, ``delta_af_ratio``, ``S_A_af_ratio`` / ``S_B_af_ratio``: module docstring)."""
    gaps: dict[str, dict[str, float]] = {}

    def rates(cond: str) -> dict[str, float]:
        if cond not in gaps:
            gaps[cond] = planted_metrics(policy, cond)
        return gaps[cond]

    group_keys = [c for c in ("method", "strength", "naming", "checkpoint", "baseline_condition")
                  if c in effects.columns]
    conds: dict[tuple, dict[str, str]] = {}
    for r in effects.iter_rows(named=True):
        if r["quantity"] == "delta_gap":
            conds.setdefault(tuple(r[k] for k in group_keys), {})[r["target"]] = r["condition"]
    out = []
    for r in effects.iter_rows(named=True):
        q, base = r["quantity"], r["baseline_condition"]
        if q in ("gap", "af_ratio"):
            out.append(rates(r["condition"])[q])
        elif q.startswith("delta_"):
            stat = q[len("delta_"):]
            out.append(rates(r["condition"])[stat] - rates(base)[stat])
        elif q in ("S_A", "S_B", "S_A_af_ratio", "S_B_af_ratio"):
            stat = "af_ratio" if q.endswith("_af_ratio") else "gap"
            group = conds[tuple(r[k] for k in group_keys)]
            pairs = r["pairs"].split(",")
            out.append(float(np.mean([
                (rates(group[f"{p}_amp"])[stat] - rates(group[f"{p}_sup"])[stat])
                for p in pairs])))
        else:
            raise ValueError(f"effects table: unknown quantity {q!r}")
    return pl.Series("planted", out, dtype=pl.Float64)


def effect_rows(policy: Policy, effects: pl.DataFrame, model: str,
                quantities: Sequence[str] = ("delta_gap", "S_A", "S_B")) -> list[dict[str, Any]]:
    planted = planted_effects(policy, effects)
    rows = []
    for r, p in zip(effects.iter_rows(named=True), planted, strict=True):
        if r["quantity"] not in quantities:
            continue
        rows.append(_row(model, r["quantity"], planted=p, estimate=r["estimate"],
                         lo=r["ci_low"], hi=r["ci_high"], level=r["ci_level"],
                         method=r["method"], target=r["target"], condition=r["condition"],
                         strength=r.get("strength"), checkpoint=r.get("checkpoint")))
    return rows


def selection_rows(policy: Policy, selection: pl.DataFrame, model: str, *, reference: str,
                   candidates: Sequence[str], signal: str, max_per_family: int | None,
                   tolerance: str | float = "ci_overlap") -> list[dict[str, Any]]:
    """Each candidate's ``selected`` flag and the model's ``model_qualifies``, against the same
    rule applied to the planted per-condition values (which have no CI: ``ci_overlap`` then
    compares the values themselves, the population meaning of "comparable to or higher")."""
    conds = [reference, *[f"sdf-{c}" for c in candidates]]
    rates = [planted_metrics(policy, c) for c in conds]
    cols = {"gap": "gap", "monitored_compliance": "monitored", "af_ratio": "af_ratio"}
    table = pl.DataFrame({"condition": conds} | {
        c: [r[k] for r in rates] for c, k in cols.items()} | {
        f"{c}_ci_{e}": [None] * len(conds) for c in cols for e in ("low", "high")},
        schema_overrides={f"{c}_ci_{e}": pl.Float64 for c in cols for e in ("low", "high")})
    truth = select_checkpoints(table, model=model, reference=reference,
                               candidates=candidates, signal=signal,
                               max_per_family=max_per_family, tolerance=tolerance)
    want = dict(zip(truth["checkpoint"], truth["selected"], strict=True))
    rows = [_exact(model, "selected", want[c], s, method="calibration", target=c)
            for c, s in zip(selection["checkpoint"], selection["selected"], strict=True)]
    rows.append(_exact(model, "model_qualifies", bool(truth["model_qualifies"][0]),
                       bool(selection["model_qualifies"][0]), method="calibration"))
    return rows


def calibration_rows(policy: Policy, calibration: pl.DataFrame, model: str, *,
                     strength: str, signal: str = "gap") -> list[dict[str, Any]]:
    """S_A / S_B per calibrated checkpoint and the ``recovered`` flag against the planted one."""
    rows = effect_rows(policy, calibration.filter(pl.col("checkpoint").is_not_null()), model,
                       quantities=("S_A", "S_B"))
    for r in rows:
        r["method"] = "calibration"
    truth = recovered(calibration.with_columns(estimate=planted_effects(policy, calibration)),
                      strength=strength, signal=signal)
    rows.append(_exact(model, "recovered", truth, calibration["recovered"][0],
                       kind="decision", method="calibration", strength=strength))
    return rows


def judge_rows(policy: Policy, judged: pl.DataFrame, model: str, *, n_boot: int, level: float,
               seed: int) -> list[dict[str, Any]]:
    """Mean judge score per direction (rollouts with a valid vote) of ``baseline`` and each SDF
    branch (one condition per intervention; the prompt conditions would add 48 more rows of
    the same check), with a percentile CI from resampling goals."""
    rows = []
    judged = judged.filter((pl.col("condition") == "baseline")
                           | (pl.col("condition").str.starts_with("sdf-")
                              & ~pl.col("condition").str.contains("@", literal=True)))
    for (cond,), df in sorted(judged.partition_by("condition", as_dict=True).items()):
        planted = policy.planted_judge_mean(condition_of(cond, policy.steering))
        for d in ("a", "b"):
            s = df.drop_nulls(f"{d}_score")
            est, lo, hi = cluster_bootstrap_mean(s[f"{d}_score"].to_numpy(),
                                                 s["goal_id"].to_numpy(), n_boot=n_boot,
                                                 level=level, seed=seed)
            rows.append(_row(model, f"judge_mean_{d}", planted=planted[d], estimate=est,
                             lo=lo, hi=hi, level=level, method="judge", condition=cond))
    return rows


def recovery_table(policy: Policy, *, model: str, metrics: pl.DataFrame,
                   effects: Sequence[pl.DataFrame] = (), judged: pl.DataFrame | None = None,
                   selection: pl.DataFrame | None = None,
                   calibration: pl.DataFrame | None = None,
                   calibration_rule: Mapping[str, Any] | None = None,
                   steering: Mapping[str, Any] | None = None,
                   n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> pl.DataFrame:
    """The planted-recovery table of one simulated model (see the module docstring).

    ``metrics``: the model's ``conditions.parquet``; ``effects``: its SDF and prompt effect
    tables; ``judged``: its judge tables concatenated; ``selection`` / ``calibration``: the
    calibration tables, with ``calibration_rule`` (reference, candidates, signal,
    max_per_family, strengths) as configured; ``steering`` (a steered model): ``effects`` (its
    ``steering_effects.parquet``), ``rollouts`` (baseline and the random controls' steered
    rollouts), ``vectors`` (``vector_tables``), ``layers`` (``layers.parquet``) and ``k`` (how
    many layers are chosen)."""
    rows = condition_rows(policy, metrics, model)
    for table in effects:
        rows += effect_rows(policy, table, model)
    if selection is not None:
        rule = dict(calibration_rule or {})
        rows += selection_rows(policy, selection, model, reference=rule["reference"],
                               candidates=rule["candidates"], signal=rule["signal"],
                               max_per_family=rule["max_per_family"],
                               tolerance=rule.get("tolerance", "ci_overlap"))
        if calibration is not None and calibration.filter(pl.col("checkpoint")
                                                          .is_not_null()).height:
            rows += calibration_rows(policy, calibration, model,
                                     strength=rule["strengths"][0], signal=rule["signal"])
    if judged is not None:
        rows += judge_rows(policy, judged, model, n_boot=n_boot, level=level, seed=seed)
    if steering is not None:
        rows += steering_effect_rows(policy, steering["effects"], model)
        rows += random_slope_rows(policy, steering["rollouts"], model, n_boot=n_boot,
                                  level=level, seed=seed)
        rows += steering_rows(policy, model=model, vectors=steering["vectors"],
                              layers=steering["layers"], k=steering["k"], level=level)
    return pl.DataFrame(rows, schema=RECOVERY_SCHEMA)


def steering_rows(policy: Policy, *, model: str,
                  vectors: Mapping[str, tuple[np.ndarray, Mapping[str, str]]],
                  layers: pl.DataFrame, k: int, level: float = 0.95) -> list[dict[str, Any]]:
    """The steering chain's deterministic outcomes against the planted activations
    (``backends.simulated_steering``):

    - ``selected_layer`` (exact), per layer: whether ``layers`` (``layers.parquet``: ``layer``,
      ``selected``) selects it, against the ``k`` layers of highest planted strength;
    - ``vector_cosine`` (bound), per fitted vector and selected layer: the cosine of the fitted
      vector with the planted direction in the noise metric, which must reach the policy's
      ``min_cosine`` (a fit with its weights not mapped back, a sign flip or a random direction
      falls far below; a finite fit never reaches 1, so this is a bound, not an interval);
    - ``random_control_cosine`` (interval), per two random controls: their mean cosine over the
      selected layers, planted 0 (independent draws), with the null's CI
      ``+- z / sqrt(d * layers)`` (identical controls give 1).

    ``vectors``: name -> (vectors [L, d], metadata with ``kind`` fitted | random, ``concept``)."""
    spec = policy.steering
    if spec is None:
        raise ValueError(f"{policy.path}: steering recovery needs a 'steering' section")
    selected = sorted(int(x) for x in layers.filter(pl.col("selected"))["layer"].to_list())
    best = spec.best_layers(k)
    rows = [_exact(model, "selected_layer", layer in best, layer in selected,
                   method="steering", target=str(layer))
            for layer in sorted(int(x) for x in layers["layer"].to_list())]
    for name, (arr, meta) in vectors.items():
        if meta.get("kind") != "fitted":
            continue
        for layer in selected:
            cos = spec.cosine(meta["concept"], layer, arr[layer])
            rows.append({"model": model, "quantity": "vector_cosine", "kind": "bound",
                         "planted": spec.min_cosine, "estimate": cos, "ci_low": None,
                         "ci_high": None, "se": None, "z": None,
                         "covered": bool(cos >= spec.min_cosine), "method": "steering",
                         "target": f"{name}@{layer}", "condition": None, "strength": None,
                         "checkpoint": None})
    randoms = sorted(n for n, (_, meta) in vectors.items() if meta.get("kind") == "random")
    half = norm.ppf(0.5 + level / 2) / np.sqrt(spec.width * max(len(selected), 1))
    for i, a in enumerate(randoms):
        for b in randoms[i + 1:]:
            va, vb = vectors[a][0], vectors[b][0]
            cos = float(np.mean([
                float(va[layer] @ vb[layer])
                / max(float(np.linalg.norm(va[layer]) * np.linalg.norm(vb[layer])), 1e-300)
                for layer in selected]))
            rows.append(_row(model, "random_control_cosine", planted=0.0, estimate=cos,
                             lo=cos - half, hi=cos + half, level=level, method="steering",
                             target=f"{a}|{b}"))
    return rows


def _scaled(row: dict[str, Any], by: float, quantity: str) -> dict[str, Any]:
    """An interval row divided by ``by`` (> 0): estimate, CI, SE and planted; z unchanged."""
    out = {**row, "quantity": quantity}
    for k in ("planted", "estimate", "ci_low", "ci_high", "se"):
        if out[k] is not None:
            out[k] = out[k] / by
    return out


def steering_effect_rows(policy: Policy, effects: pl.DataFrame,
                         model: str) -> list[dict[str, Any]]:
    """From a steering effects table (``steering_profile``: each concept's vector at +m / -m as
    its family's amplify / suppress arm): each arm's Delta-gap and each concept's steering
    slope, ``(Delta-gap(+m) - Delta-gap(-m)) / 2m`` = S / 2m with its CI, against the planted
    slope (the planted compliance logits moved by ``slope`` x the doses of a perfect fit at
    ``+-m``, ``condition_of``)."""
    rows = []
    arms = effects.filter(pl.col("quantity") == "delta_gap")
    concept_of = {}
    for r in arms.iter_rows(named=True):
        steer = parse_steer_condition(r["condition"])
        if steer is None or steer.vector is None:
            raise ValueError(f"steering effects: {r['condition']!r} is not a steered condition")
        concept_of[r["target"][:2]] = (steer.vector.concept, abs(steer.multiplier))
    for r in effect_rows(policy, effects, model):
        r["method"] = "steering"
        if r["quantity"] == "delta_gap":
            rows.append(r)
            continue
        pairs = effects.filter((pl.col("quantity") == r["quantity"])
                               & (pl.col("target") == r["target"]))["pairs"][0].split(",")
        (concept, m), = {concept_of[p] for p in pairs}
        rows.append({**_scaled(r, 2 * m, "steering_slope"), "target": concept})
    return rows


def random_slope_rows(policy: Policy, rollouts: pl.DataFrame, model: str, *, n_boot: int,
                      level: float, seed: int) -> list[dict[str, Any]]:
    """Each random control's slope, Delta-gap(+m) / m against the unsteered ``baseline`` (a
    paired goal bootstrap, ``metrics.profiles.intervention_effects``), planted 0: a random
    direction is independent of every planted one (identical controls are caught by the cosine
    rows, ``steering_rows``; a concept-aligned one by these). At the simulated width (32) a
    drawn control still has |cosine| ~ 0.1-0.2 with each planted direction, a realised effect
    of about one SE at the demo's design that real models' widths make negligible."""
    conds = sorted(c for c in rollouts["condition"].unique().to_list()
                   if (s := parse_steer_condition(c)) is not None and s.vector is not None
                   and s.vector.kind == "random")
    if not conds:
        return []
    effects = intervention_effects(rollouts, baseline="baseline",
                                   interventions={c: c for c in conds}, n_boot=n_boot,
                                   level=level, seed=seed)
    effects = effects.with_columns(method=pl.lit("steering"))
    rows = []
    for r in effect_rows(policy, effects, model, quantities=("delta_gap",)):
        steer = parse_steer_condition(r["condition"])
        m = float(steer.multiplier)
        if m == 0:
            continue
        row = _scaled(r, abs(m), "random_control_slope")
        if m < 0:   # a negative dose flips the slope's sign
            row.update(estimate=-row["estimate"], ci_low=-row["ci_high"],
                       ci_high=-row["ci_low"], planted=-row["planted"], z=-row["z"]
                       if row["z"] is not None else None)
        rows.append({**row, "method": "steering", "target": steer.vector.name})
    return rows


def vector_tables(paths: Sequence[str]) -> dict[str, tuple[np.ndarray, dict[str, str]]]:
    """name -> (vectors [L, d], metadata) of fitted and random vector files."""
    from motivation_profiles.steering.vectors import load_vectors

    out = {}
    for path in paths:
        arr, meta = load_vectors(path)
        out[meta["name"]] = (arr, meta)
    return out


def summary(table: pl.DataFrame) -> dict[str, Any]:
    """Share of interval rows covered, the largest |z|, whether every exact row matches, and
    how many decision rows match."""
    iv = table.filter(pl.col("kind") == "interval")
    ex = table.filter(pl.col("kind") == "exact")
    de = table.filter(pl.col("kind") == "decision")
    bd = table.filter(pl.col("kind") == "bound")
    return {"intervals": iv.height,
            "covered": float(iv["covered"].mean()) if iv.height else None,
            "max_abs_z": float(iv["z"].abs().max()) if iv.height else None,
            "exact": ex.height, "exact_equal": bool(ex["covered"].all()) if ex.height else None,
            "decisions": de.height, "decisions_equal": int(de["covered"].sum()),
            "bounds": bd.height, "bounds_met": bool(bd["covered"].all()) if bd.height else None}
