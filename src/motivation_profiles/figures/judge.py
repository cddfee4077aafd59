"""Judge score distributions (Direction A / B) per condition."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from motivation_profiles.figures.style import (
    TIER_COLORS,
    TIER_LABELS,
    _null,
    _num,
    _require,
    _valid,
    save,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from motivation_profiles.rollouts.protocol import TIERS  # noqa: E402

# ----------------------------------------------------------------------------- judge

JUDGE_COLUMNS = ["model", "condition", "tier", "status", "a_score", "b_score"]


def judge_condition_order(conditions: Sequence[str]) -> list[str]:
    """``baseline`` first, then every other condition sorted."""
    present = {str(c) for c in conditions if not _null(c)}
    return (["baseline"] if "baseline" in present else []) + sorted(present - {"baseline"})


def _mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of a normal-approximation 95% CI (0 for one value)."""
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return np.nan, np.nan
    half = 1.96 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return float(v.mean()), float(half)


def _as_str(values: pl.Series) -> np.ndarray:
    """A column's values as strings (``str(value)``; None for a missing cell)."""
    return np.array([None if _null(v) else str(v) for v in values.to_list()], dtype=object)


def _status_counts(status: pl.Series) -> list[tuple[object, int]]:
    """(status, count) of the non-missing values, most frequent first, ties in order of first
    appearance."""
    counts = Counter(_valid(status.to_list()))  # keys in order of first appearance
    return sorted(counts.items(), key=lambda kv: -kv[1])


def judge_scores(df: pl.DataFrame, display_names: Mapping[str, str],
                 outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """The judge's Direction A / B scores per condition and tier (one row of two panels per
    model): jittered strips, the mean with a 95% CI, and scored / total per condition.
    Reads ``results/judge/{model}/{condition}.parquet``."""
    _require(df, JUDGE_COLUMNS, "judge_scores")
    models = sorted(df["model"].drop_nulls().unique().to_list())
    orders = {m: judge_condition_order(df.filter(pl.col("model") == m)["condition"].to_list())
              for m in models}
    heights = [0.32 * max(len(orders[m]), 1) + 1.0 for m in models]
    total = sum(heights) + 0.6
    fig = plt.figure(figsize=(10.0, total))
    grid = fig.add_gridspec(len(models), 2, height_ratios=heights, top=1 - 0.85 / total,
                            hspace=1.1 / float(np.mean(heights)), wspace=0.16)
    rng = np.random.default_rng(0)
    tiers = list(TIERS) + sorted(set(_valid(_as_str(df["tier"]))) - set(TIERS))
    offsets = {t: (k - (len(tiers) - 1) / 2) * 0.34 / max(len(tiers) - 1, 1)
               for k, t in enumerate(tiers)}
    limits = {}
    for col in ("a_score", "b_score"):
        v = _num(df[col])
        v = v[np.isfinite(v)]
        lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
        pad = max((hi - lo) * 0.06, 0.25)
        limits[col] = (lo - pad, hi + pad)
    for i, model in enumerate(models):
        m = df.filter(pl.col("model") == model)
        conds = orders[model]
        status = _status_counts(m["status"])
        condition, tier_of = _as_str(m["condition"]), _as_str(m["tier"])
        left = None
        for j, (col, direction) in enumerate((("a_score", "A: researcher expectations"),
                                              ("b_score", "B: consequences"))):
            ax = fig.add_subplot(grid[i, j], sharey=left)
            left = left or ax
            scores = _num(m[col])
            for y, cond in enumerate(conds):
                in_cond = condition == cond
                for tier in tiers:
                    sel = in_cond & (tier_of == tier)
                    v = scores[sel]
                    v = v[np.isfinite(v)]
                    if len(v) == 0:
                        continue
                    yy = y + offsets[tier] + rng.uniform(-0.06, 0.06, len(v))
                    color = TIER_COLORS.get(tier, "grey")
                    ax.scatter(v, yy, s=7, color=color, alpha=0.35, lw=0, zorder=2)
                    mean, half = _mean_ci(v)
                    ax.errorbar([mean], [y + offsets[tier]], xerr=[[half], [half]], fmt="D",
                                ms=4, color=color, mec="black", mew=0.5, capsize=2, lw=1.2,
                                zorder=3)
                scored = int(np.isfinite(scores[in_cond]).sum())
                ax.annotate(f"{scored}/{int(in_cond.sum())}", (1.01, y),
                            xycoords=("axes fraction", "data"), va="center", fontsize=6,
                            color="black" if scored else "grey", annotation_clip=False)
            if j == 0:
                ax.set_yticks(np.arange(len(conds)), conds, fontsize=6)
                ax.set_ylim(len(conds) - 0.5, -0.5)
            else:
                ax.tick_params(axis="y", labelleft=False)
            ax.set_xlim(limits[col])
            ax.tick_params(axis="x", labelsize=7)
            ax.set_xlabel(f"Direction {direction} (mean of k judge samples)", fontsize=7)
            ax.grid(axis="x", color="lightgrey", lw=0.5)
            ax.spines[["top", "right"]].set_visible(False)
            if not np.isfinite(scores).any():
                ax.text(0.5, 0.5, "no parseable judge scores", transform=ax.transAxes,
                        ha="center", va="center", fontsize=9, color="grey",
                        bbox={"facecolor": "white", "edgecolor": "lightgrey"})
            if j == 0:
                stat = ", ".join(f"{k} {int(n)}" for k, n in status)
                ax.set_title(f"{display_names.get(model, model)}   (status: {stat})",
                             fontsize=8, loc="left")
    handles = [plt.Line2D([], [], ls="", marker="o", color=TIER_COLORS.get(t, "grey"),
                          label=TIER_LABELS.get(t, t)) for t in tiers]
    handles.append(plt.Line2D([], [], ls="-", marker="D", color="grey", mec="black",
                              label="mean \u00b1 95% CI"))
    judge = ""
    judges = _valid(_as_str(df["judge_model"])) if "judge_model" in df.columns else []
    if judges:
        judge = " \u2014 judge: " + ", ".join(sorted(set(judges)))
    fig.legend(handles=handles, fontsize=7, loc="upper center", ncol=len(handles),
               frameon=False, bbox_to_anchor=(0.5, 1.0 - 0.25 / fig.get_figheight()))
    fig.suptitle(f"Judge scores per condition (right: scored / total){judge}", fontsize=10,
                 y=1.0 + 0.15 / fig.get_figheight())
    save(fig, outputs, dpi)
