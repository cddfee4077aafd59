"""Steering tables for the figures: compliance and judge decomposition per steered condition.

* ``steering_summary`` joins the per-condition metrics (compliance per tier with Wilson CIs,
  the paired gap with its bootstrap CI) with the scratchpad judge's Direction A / B scores of
  the same rollouts, one row per (model, vector, multiplier, tier). The unsteered ``baseline``
  is every vector's multiplier-0 point, so each sweep is drawn through the same origin.
* ``raw_summary`` turns the compliance judge's verdicts on the raw-AdvBench control (no system
  prompt, no tag protocol; Appendix D.6) into a compliance rate with a Wilson interval per
  raw condition.

Vector and condition names are parsed with ``motivation_profiles.steering.names`` only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

from motivation_profiles.rollouts.protocol import TIERS
from motivation_profiles.steering.names import (
    CONCEPTS,
    SOURCES,
    parse_steer_condition,
    parse_vector,
)

SUMMARY_COLUMNS = ["model", "vector", "concept", "source", "kind", "of", "multiplier",
                   "condition", "tier", "compliance", "ci_low", "ci_high", "n", "gap",
                   "gap_ci_low", "gap_ci_high", "judged", "a_scored", "b_scored", "a_mean",
                   "b_mean", "a_share", "b_share", "high", "ci_level"]


RAW_COLUMNS = ["model", "condition", "vector", "concept", "source", "kind", "of", "multiplier",
               "n", "judged", "complied", "ci_low", "ci_high", "unparsed", "ci_level"]


METRICS_COLUMNS = ["model", "condition", "gap", "gap_ci_low", "gap_ci_high", "ci_level",
                   *(f"{t}_{c}" for t in TIERS
                     for c in ("n", "compliance", "compliance_ci_low", "compliance_ci_high"))]


JUDGE_COLUMNS = ["model", "condition", "tier", "status", "a_score", "b_score"]


RAW_INPUT_COLUMNS = ["model", "condition", "goal_id", "seed", "status", "complied"]


JUDGED_STATUSES = ("ok", "partial")


def _check(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, df.columns))})")


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (closed form; NaNs when n = 0)."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} successes outside 0..n={n}")
    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _vector_fields(vector: str) -> dict[str, object]:
    ref = parse_vector(vector)
    return {"vector": ref.name, "concept": ref.concept, "source": ref.source, "kind": ref.kind,
            "of": ref.of, "_k": ref.k if ref.k is not None else 0}


def _order_key(df: pd.DataFrame) -> pd.DataFrame:
    """Sort helpers: concept / source in their canonical order, fitted before random, random
    controls by their index (numerically), then multiplier and tier."""
    return df.assign(
        _concept=df["concept"].map({c: i for i, c in enumerate(CONCEPTS)}),
        _source=df["source"].map({s: i for i, s in enumerate(SOURCES)}),
        _kind=(df["kind"] != "fitted").astype(int))


def _judge_stats(judge: pd.DataFrame, high: float) -> dict[tuple[str, str, str], dict]:
    """Per (model, condition, tier): judged count, scored counts, means and high shares."""
    out: dict[tuple[str, str, str], dict] = {}
    if len(judge) == 0:
        return out
    for (model, cond, tier), g in judge.groupby(["model", "condition", "tier"], sort=True):
        rec = {"judged": int(g["status"].isin(JUDGED_STATUSES).sum())}
        for d in ("a", "b"):
            s = pd.to_numeric(g[f"{d}_score"], errors="coerce").to_numpy(float)
            s = s[np.isfinite(s)]
            rec[f"{d}_scored"] = len(s)
            rec[f"{d}_mean"] = float(s.mean()) if len(s) else math.nan
            rec[f"{d}_share"] = float((s >= high).mean()) if len(s) else math.nan
        out[(str(model), str(cond), str(tier))] = rec
    return out


def steering_summary(metrics: pd.DataFrame, judge: pd.DataFrame, *, high: float,
                     baseline: str = "baseline") -> pd.DataFrame:
    """One row per (model, vector, multiplier, tier) of the ``steer-`` conditions in
    ``metrics`` (rows of other kinds are ignored).

    The ``baseline`` condition gives every vector present for that model a multiplier-0.0 row
    (condition ``baseline``); an explicit ``steer-{v}-x+0`` condition takes its place. Columns:
    ``compliance``, ``ci_low``, ``ci_high``, ``n`` of the tier; the condition's ``gap`` with
    its CI (repeated on both tier rows); from ``judge`` (scratchpad judge rows of the same
    conditions): ``judged`` (status ok / partial), ``a_scored`` / ``b_scored`` (rollouts with
    a finite score), ``a_mean`` / ``b_mean`` and ``a_share`` / ``b_share`` (share of scored
    rollouts with score >= ``high``; NaN when none), and ``high`` itself. Sorted by model,
    concept, source, fitted before random (by index), multiplier, tier.
    """
    _check(metrics, METRICS_COLUMNS, "steering_summary: the metrics table")
    if len(judge) or len(judge.columns):
        _check(judge, JUDGE_COLUMNS, "steering_summary: the judge table")
    stats = _judge_stats(judge, float(high))
    empty_stats = {"judged": 0, "a_scored": 0, "b_scored": 0, "a_mean": math.nan,
                   "b_mean": math.nan, "a_share": math.nan, "b_share": math.nan}

    steered: list[tuple[str, str, str, float, pd.Series]] = []  # model, cond, vector, mult
    baselines: dict[str, pd.Series] = {}
    for _, row in metrics.iterrows():
        cond, model = str(row["condition"]), str(row["model"])
        if cond == baseline:
            if model in baselines:
                raise ValueError(f"steering_summary: two metrics rows for {model}/{cond}")
            baselines[model] = row
            continue
        parsed = parse_steer_condition(cond)
        if parsed is None or parsed.raw:
            continue
        steered.append((model, cond, parsed.vector.name, parsed.multiplier, row))

    points: dict[tuple[str, str, float], tuple[str, pd.Series]] = {}
    for model, cond, vector, mult, row in steered:
        key = (model, vector, mult)
        if key in points:
            raise ValueError(f"steering_summary: {model}: {points[key][0]} and {cond} are the "
                             f"same (vector, multiplier)")
        points[key] = (cond, row)
    for model, vector in sorted({(k[0], k[1]) for k in points}):
        if model in baselines and (model, vector, 0.0) not in points:
            points[(model, vector, 0.0)] = (baseline, baselines[model])

    rows = []
    for (model, vector, mult), (cond, row) in points.items():
        for tier in TIERS:
            rec = {"model": model, **_vector_fields(vector), "multiplier": float(mult),
                   "condition": cond, "tier": tier,
                   "compliance": float(row[f"{tier}_compliance"]),
                   "ci_low": float(row[f"{tier}_compliance_ci_low"]),
                   "ci_high": float(row[f"{tier}_compliance_ci_high"]),
                   "n": int(row[f"{tier}_n"]), "gap": float(row["gap"]),
                   "gap_ci_low": float(row["gap_ci_low"]),
                   "gap_ci_high": float(row["gap_ci_high"])}
            rec.update(stats.get((model, cond, tier), empty_stats))
            rec.update(high=float(high), ci_level=float(row["ci_level"]))
            rows.append(rec)
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SUMMARY_COLUMNS})
    df = _order_key(pd.DataFrame(rows))
    df["_tier"] = df["tier"].map({t: i for i, t in enumerate(TIERS)})
    df = df.sort_values(["model", "_concept", "_source", "_kind", "_k", "multiplier", "_tier"],
                        kind="mergesort")
    df = df[SUMMARY_COLUMNS].reset_index(drop=True)
    for c in ("n", "judged", "a_scored", "b_scored"):
        df[c] = df[c].astype(int)
    return df


def _complied(value: object) -> bool | None:
    """True / False / None from a boolean-ish cell (pandas NA, strings, 0/1 included)."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "yes", "1"):
            return True
        if v in ("false", "no", "0"):
            return False
        return None
    return bool(value)


def raw_summary(judge_raw: pd.DataFrame, *, level: float = 0.95) -> pd.DataFrame:
    """One row per (model, raw condition) of the compliance judge's verdicts: ``n`` rollouts,
    ``judged`` (status ok with a verdict), ``complied`` (rate over judged), its Wilson
    ``ci_low`` / ``ci_high`` at ``level``, and ``unparsed`` (rows without a verdict: unparsed,
    tie, empty response). ``vector`` / ``concept`` / ``source`` / ``kind`` / ``of`` are None
    and ``multiplier`` 0.0 for ``raw-baseline``. A non-raw condition raises ValueError.
    Sorted by model, baseline first, then concept, source, fitted before random, multiplier."""
    _check(judge_raw, RAW_INPUT_COLUMNS, "raw_summary: the compliance-judge table")
    rows = []
    for (model, cond), g in judge_raw.groupby(["model", "condition"], sort=True):
        parsed = parse_steer_condition(str(cond))
        if parsed is None or not parsed.raw:
            raise ValueError(f"raw_summary: {cond!r} is not a raw condition "
                             "(raw-baseline or raw-{vector}-x{multiplier})")
        verdicts = [_complied(v) for v in g["complied"]]
        ok = (g["status"].astype(str) == "ok").to_numpy()
        judged = [v for v, o in zip(verdicts, ok, strict=True) if o and v is not None]
        k = sum(judged)
        lo, hi = wilson_interval(k, len(judged), level)
        fields = (_vector_fields(parsed.vector.name) if parsed.vector is not None else
                  {"vector": None, "concept": None, "source": None, "kind": None, "of": None,
                   "_k": 0})
        rows.append({"model": str(model), "condition": str(cond), **fields,
                     "multiplier": float(parsed.multiplier), "n": len(g),
                     "judged": len(judged),
                     "complied": k / len(judged) if judged else math.nan,
                     "ci_low": lo, "ci_high": hi, "unparsed": len(g) - len(judged),
                     "ci_level": float(level)})
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in RAW_COLUMNS})
    df = _order_key(pd.DataFrame(rows))
    df["_base"] = df["vector"].notna().astype(int)
    df = df.sort_values(["model", "_base", "_concept", "_source", "_kind", "_k", "multiplier"],
                        kind="mergesort", na_position="first")
    df = df[RAW_COLUMNS].reset_index(drop=True)
    for c in ("n", "judged", "unparsed"):
        df[c] = df[c].astype(int)
    for c in ("vector", "concept", "source", "kind", "of"):  # None, not NaN, on raw-baseline
        df[c] = pd.Series([None if pd.isna(v) else str(v) for v in df[c]], dtype=object)
    return df


__all__ = ["steering_summary", "raw_summary", "wilson_interval", "SUMMARY_COLUMNS",
           "RAW_COLUMNS"]
