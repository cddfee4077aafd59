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
import polars as pl
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


SUMMARY_SCHEMA = {
    **dict.fromkeys(["model", "vector", "concept", "source", "kind", "of"], pl.String),
    "multiplier": pl.Float64, "condition": pl.String, "tier": pl.String,
    **dict.fromkeys(["compliance", "ci_low", "ci_high"], pl.Float64), "n": pl.Int64,
    **dict.fromkeys(["gap", "gap_ci_low", "gap_ci_high"], pl.Float64),
    **dict.fromkeys(["judged", "a_scored", "b_scored"], pl.Int64),
    **dict.fromkeys(["a_mean", "b_mean", "a_share", "b_share", "high", "ci_level"], pl.Float64),
}


RAW_SCHEMA = {
    **dict.fromkeys(["model", "condition", "vector", "concept", "source", "kind", "of"],
                    pl.String),
    "multiplier": pl.Float64, "n": pl.Int64, "judged": pl.Int64, "complied": pl.Float64,
    "ci_low": pl.Float64, "ci_high": pl.Float64, "unparsed": pl.Int64,
    "ci_level": pl.Float64,
}


JUDGED_STATUSES = ("ok", "partial")


def _check(df: pl.DataFrame, columns: Sequence[str], what: str) -> None:
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


def _order_key(df: pl.DataFrame) -> pl.DataFrame:
    """Sort helpers: concept / source in their canonical order (null when absent), fitted
    before random; random controls sort by their index (``_k``), then multiplier and tier."""
    return df.with_columns(
        _concept=pl.col("concept").replace_strict({c: i for i, c in enumerate(CONCEPTS)},
                                                  default=None, return_dtype=pl.Int64),
        _source=pl.col("source").replace_strict({s: i for i, s in enumerate(SOURCES)},
                                                default=None, return_dtype=pl.Int64),
        _kind=pl.col("kind").ne_missing("fitted").cast(pl.Int64))


def _groups(df: pl.DataFrame, keys: Sequence[str]) -> list[tuple[tuple, pl.DataFrame]]:
    """``(key, rows)`` per distinct ``keys`` tuple without a missing value, keys sorted, rows in
    table order."""
    index: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(*(df[k].to_list() for k in keys), strict=True)):
        if not any(_missing(v) for v in key):
            index.setdefault(key, []).append(i)
    return [(key, df[index[key], :]) for key in sorted(index)]


def _missing(value: object) -> bool:
    """None or a float NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _judge_stats(judge: pl.DataFrame, high: float) -> dict[tuple[str, str, str], dict]:
    """Per (model, condition, tier): judged count, scored counts, means and high shares."""
    out: dict[tuple[str, str, str], dict] = {}
    if len(judge) == 0:
        return out
    for (model, cond, tier), g in _groups(judge, ["model", "condition", "tier"]):
        rec = {"judged": sum(v in JUDGED_STATUSES for v in g["status"].to_list())}
        for d in ("a", "b"):
            s = np.asarray(g[f"{d}_score"].cast(pl.Float64, strict=False).to_numpy(), float)
            s = s[np.isfinite(s)]
            rec[f"{d}_scored"] = len(s)
            rec[f"{d}_mean"] = float(s.mean()) if len(s) else math.nan
            rec[f"{d}_share"] = float((s >= high).mean()) if len(s) else math.nan
        out[(str(model), str(cond), str(tier))] = rec
    return out


def steering_summary(metrics: pl.DataFrame, judge: pl.DataFrame, *, high: float,
                     baseline: str = "baseline") -> pl.DataFrame:
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

    steered: list[tuple[str, str, str, float, dict]] = []  # model, cond, vector, mult, row
    baselines: dict[str, dict] = {}
    for row in metrics.iter_rows(named=True):
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

    points: dict[tuple[str, str, float], tuple[str, dict]] = {}
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
                   "compliance": _float(row[f"{tier}_compliance"]),
                   "ci_low": _float(row[f"{tier}_compliance_ci_low"]),
                   "ci_high": _float(row[f"{tier}_compliance_ci_high"]),
                   "n": int(_float(row[f"{tier}_n"])), "gap": _float(row["gap"]),
                   "gap_ci_low": _float(row["gap_ci_low"]),
                   "gap_ci_high": _float(row["gap_ci_high"])}
            rec.update(stats.get((model, cond, tier), empty_stats))
            rec.update(high=float(high), ci_level=_float(row["ci_level"]))
            rows.append(rec)
    if not rows:
        return pl.DataFrame(schema=SUMMARY_SCHEMA)
    df = _order_key(pl.DataFrame(rows, schema={**SUMMARY_SCHEMA, "_k": pl.Int64}))
    df = df.with_columns(_tier=pl.col("tier").replace_strict(
        {t: i for i, t in enumerate(TIERS)}, return_dtype=pl.Int64))
    return (df.sort(["model", "_concept", "_source", "_kind", "_k", "multiplier", "_tier"],
                    nulls_last=True, maintain_order=True)
            .select(SUMMARY_COLUMNS))


def _float(value: object) -> float:
    """``float(value)``, NaN for a null cell."""
    return math.nan if value is None else float(value)


def _complied(value: object) -> bool | None:
    """True / False / None from a boolean-ish cell (null, NaN, strings, 0/1 included; a list
    or array is no verdict)."""
    if value is None or isinstance(value, (list, tuple, dict, np.ndarray, pl.Series)):
        return None
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        return None
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "yes", "1"):
            return True
        if v in ("false", "no", "0"):
            return False
        return None
    return bool(value)


def raw_summary(judge_raw: pl.DataFrame, *, level: float = 0.95) -> pl.DataFrame:
    """One row per (model, raw condition) of the compliance judge's verdicts: ``n`` rollouts,
    ``judged`` (status ok with a verdict), ``complied`` (rate over judged), its Wilson
    ``ci_low`` / ``ci_high`` at ``level``, and ``unparsed`` (rows without a verdict: unparsed,
    tie, empty response). ``vector`` / ``concept`` / ``source`` / ``kind`` / ``of`` are None
    and ``multiplier`` 0.0 for ``raw-baseline``. A non-raw condition raises ValueError.
    Sorted by model, baseline first, then concept, source, fitted before random, multiplier."""
    _check(judge_raw, RAW_INPUT_COLUMNS, "raw_summary: the compliance-judge table")
    rows = []
    for (model, cond), g in _groups(judge_raw, ["model", "condition"]):
        parsed = parse_steer_condition(str(cond))
        if parsed is None or not parsed.raw:
            raise ValueError(f"raw_summary: {cond!r} is not a raw condition "
                             "(raw-baseline or raw-{vector}-x{multiplier})")
        verdicts = [_complied(v) for v in g["complied"].to_list()]
        ok = [str(v) == "ok" for v in g["status"].to_list()]
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
        return pl.DataFrame(schema=RAW_SCHEMA)
    df = _order_key(pl.DataFrame(rows, schema={**RAW_SCHEMA, "_k": pl.Int64}))
    df = df.with_columns(_base=pl.col("vector").is_not_null().cast(pl.Int64))
    return (df.sort(["model", "_base", "_concept", "_source", "_kind", "_k", "multiplier"],
                    nulls_last=False, maintain_order=True)
            .select(RAW_COLUMNS))  # vector .. of: null on raw-baseline


__all__ = ["steering_summary", "raw_summary", "wilson_interval", "SUMMARY_COLUMNS",
           "RAW_COLUMNS"]
