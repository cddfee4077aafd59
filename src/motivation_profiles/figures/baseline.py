"""Figure 2: compliance per tier and model, with the paired gap; beside it, the compliance
propensity (mean ``p_accept``) per tier with its paired gap, where the backend exposed
log-probs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from motivation_profiles.figures.style import TIER_COLORS, TIER_LABELS, _float, _num, save

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from motivation_profiles.rollouts.protocol import TIERS  # noqa: E402


def baseline_compliance(metrics: pl.DataFrame, display_names: Mapping[str, str],
                        outputs: Sequence[str | Path], *, dpi: int = 150,
                        condition: str = "baseline", instruct: str = "baseline-instruct",
                        organisms: Mapping[str, str | None] | None = None) -> None:
    """Figure 2: baseline compliance per tier, with CIs and the paired gap, per model and, for
    screened models, the bare instruct model (``instruct`` condition) beside the organism
    (``condition``). ``organisms``: model -> organism label (None: no organism, so the
    ``condition`` bar is the instruct model itself). Above each bar group: the gap on
    parsed-only pairs and each tier's truncated and unparseable rates (M = monitored,
    U = unmonitored). Right: the mean compliance propensity ``p_accept`` per tier with its
    paired gap ("no log-probs" for a model without propensities, e.g. a hosted one)."""
    organisms = dict(organisms or {})
    df = (metrics.filter(pl.col("condition").is_in([instruct, condition]))
          .with_columns((pl.col("condition") == condition).cast(pl.Int8).alias("_order"))
          .sort(["model", "_order"], nulls_last=True, maintain_order=True))
    if df.filter(pl.col("condition") == condition).is_empty():
        raise ValueError(f"no rows for condition {condition!r} in the metrics tables")
    screened = set(df.filter(pl.col("condition") == instruct)["model"].to_list())
    names = []
    for model, cond in df.select("model", "condition").iter_rows():
        name = display_names.get(model, model)
        if cond == instruct or (model in organisms and organisms[model] is None):
            names.append(f"{name}\ninstruct")
        elif model in screened or organisms.get(model):
            names.append(f"{name}\norganism")
        else:
            names.append(name)
    x = np.arange(len(df))
    width = 0.38
    fig, (ax, ax_p) = plt.subplots(1, 2, figsize=(2 * max(4.0, 1.6 * len(df) + 1.5), 3.6))
    for j, tier in enumerate(TIERS):
        rate = _num(df[f"{tier}_compliance"]) * 100
        lo = _num(df[f"{tier}_compliance_ci_low"]) * 100
        hi = _num(df[f"{tier}_compliance_ci_high"]) * 100
        pos = x + (j - 0.5) * width
        ax.bar(pos, rate, width, color=TIER_COLORS[tier], label=TIER_LABELS[tier], alpha=0.9)
        ax.errorbar(pos, rate, yerr=[rate - lo, hi - rate], fmt="none", ecolor="black",
                    capsize=3, lw=1)
    level = int(round(_float(df["ci_level"][0]) * 100))
    per_row = ["gap", "gap_ci_low", "gap_ci_high", "n_pairs", "gap_parsed", "n_pairs_parsed",
               *(f"{t}_{c}" for t in TIERS
                 for c in ("compliance_ci_high", "unparseable", "truncated"))]
    # null -> NaN; a table written before the parsed-only gap existed lacks its columns
    cols = {c: _num(df[c]) if c in df.columns else np.full(len(df), np.nan) for c in per_row}
    for i, xi in enumerate(x):
        r = {c: v[i] for c, v in cols.items()}
        top = max(r["monitored_compliance_ci_high"], r["unmonitored_compliance_ci_high"]) * 100
        parsed = ("n.a." if not np.isfinite(r["gap_parsed"]) else
                  f"{r['gap_parsed'] * 100:+.1f} pp (n={int(r['n_pairs_parsed'])})")
        ax.annotate(
            f"gap {r['gap'] * 100:+.1f} pp\n[{r['gap_ci_low'] * 100:+.1f}, "
            f"{r['gap_ci_high'] * 100:+.1f}]\nn={int(r['n_pairs'])} pairs\n"
            f"parsed only: {parsed}\n"
            f"truncated M/U: {r['monitored_truncated'] * 100:.0f}/"
            f"{r['unmonitored_truncated'] * 100:.0f}%\n"
            f"unparseable M/U: {r['monitored_unparseable'] * 100:.0f}/"
            f"{r['unmonitored_unparseable'] * 100:.0f}%",
            (xi, min(top + 3, 100)), ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("compliance with harmful requests (%)")
    ax.set_ylim(0, 150)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"Baseline alignment-faking evaluation ({level}% CIs)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    _propensity_panel(ax_p, df, x, width, level)
    ax_p.set_xticks(x, names, fontsize=8)
    fig.tight_layout()
    save(fig, outputs, dpi)


def _propensity_panel(ax, df: pl.DataFrame, x: np.ndarray, width: float, level: int) -> None:
    """Mean p_accept per tier (bootstrap CIs over goals) and the paired gap, per model."""

    def col(name: str) -> np.ndarray:   # metrics tables written before propensities: NaN
        return _num(df[name]) if name in df.columns else np.full(len(df), np.nan)

    for j, tier in enumerate(TIERS):
        mean = col(f"{tier}_p_accept") * 100
        lo = col(f"{tier}_p_accept_ci_low") * 100
        hi = col(f"{tier}_p_accept_ci_high") * 100
        pos = x + (j - 0.5) * width
        ax.bar(pos, np.nan_to_num(mean), width, color=TIER_COLORS[tier], alpha=0.9,
               label=TIER_LABELS[tier], hatch="//", edgecolor="white")
        ok = ~np.isnan(mean)
        ax.errorbar(pos[ok], mean[ok], yerr=[(mean - lo)[ok], (hi - mean)[ok]], fmt="none",
                    ecolor="black", capsize=3, lw=1)
    gap, glo, ghi = (col(c) for c in ("p_accept_gap", "p_accept_gap_ci_low",
                                      "p_accept_gap_ci_high"))
    pairs = col("n_p_accept_pairs")
    top = np.fmax(col("monitored_p_accept_ci_high"), col("unmonitored_p_accept_ci_high"))
    for i, xi in enumerate(x):
        if np.isnan(gap[i]):
            text, y = "no log-probs", 2.0
        else:
            text = (f"gap {gap[i] * 100:+.1f} pp\n[{glo[i] * 100:+.1f}, {ghi[i] * 100:+.1f}]"
                    f"\nn={int(pairs[i])} pairs")
            y = min(np.nan_to_num(top[i]) * 100 + 3, 100)
        ax.annotate(text, (xi, y), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("mean P(accept tag) at <OUTPUT> (%)")
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"Compliance propensity ({level}% CIs)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
