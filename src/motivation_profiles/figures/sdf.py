"""Figure 3 and Appendix B: SDF effects, strength sweep, role play."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from motivation_profiles.figures.style import (
    FAMILY_COLORS,
    INTERVENTION_ORDER,
    STRENGTH_ORDER,
    TIER_COLORS,
    _first_rows,
    _float,
    _label,
    save,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402


def _pp(row: dict) -> tuple[float, float, float]:
    """A row's estimate and CI in pp (NaN where null)."""
    return (_float(row["estimate"]) * 100, _float(row["ci_low"]) * 100,
            _float(row["ci_high"]) * 100)


def _where(df: pl.DataFrame, **equal: object) -> pl.DataFrame:
    """The rows whose columns equal the given values (a null cell equals nothing)."""
    return df.filter(*(pl.col(c).eq_missing(v) for c, v in equal.items()))


def _sens_text(df: pl.DataFrame) -> str:
    parts = []
    for fam in ("A", "B"):
        r = _where(df, quantity=f"S_{fam}")
        if len(r):
            e, lo, hi = _pp(r.row(0, named=True))
            parts.append(f"S_{fam} = {e:+.1f} pp [{lo:+.1f}, {hi:+.1f}]")
    return "   ".join(parts)


NO_ANSWER = (("truncated", None), ("unparseable", "....."))


def _no_answer_panel(ax, rates: pl.DataFrame, model: str, present: Sequence[str]) -> None:
    """Per SDF condition (the noise adapter first), each tier's truncated (solid) and
    unparseable (dotted) rate, stacked, monitored left and unmonitored right, in %."""
    m = rates.filter(pl.col("model").eq_missing(model))
    names = ["noise", *present]
    x = np.arange(len(names))
    for dx, tier in ((-0.18, "monitored"), (0.18, "unmonitored")):
        bottom = np.zeros(len(names))
        for outcome, hatch in NO_ANSWER:
            col = f"{tier}_{outcome}"
            vals = np.array([
                _float(r[col][0]) * 100 if len(r := m.filter(
                    pl.col("condition").eq_missing(f"sdf-{n}"))) and col in r.columns
                else np.nan for n in names])
            ax.bar(x + dx, np.nan_to_num(vals), 0.34, bottom=bottom, color=TIER_COLORS[tier],
                   alpha=0.9 if hatch is None else 0.35, hatch=hatch, edgecolor="white",
                   lw=0.3)
            bottom += np.nan_to_num(vals)
    ax.set_xticks(x, [_label(n) if n != "noise" else "noise" for n in names], fontsize=7)
    ax.set_ylim(0, 100)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)


def sdf_profile(effects: pl.DataFrame, display_names: Mapping[str, str],
                outputs: Sequence[str | Path], *, dpi: int = 150,
                rates: pl.DataFrame | None = None) -> None:
    """Figure 3: per model, each SDF intervention's effect on the AF gap against the noise
    adapter (bars, CI), the shift of each tier's compliance (markers), and S_A / S_B. With
    ``rates`` (the SDF conditions' metrics tables), a lower row shows each condition's
    truncated and unparseable rate per tier (:func:`_no_answer_panel`)."""
    df = _where(effects, strength="standard", naming="original")
    models = sorted(df["model"].unique().to_list())
    if not models:
        raise ValueError("no standard-strength SDF effects to draw")
    with_rates = rates is not None and not rates.is_empty()
    fig, grid = plt.subplots(2 if with_rates else 1, len(models),
                             figsize=(4.6 * len(models), 6.0 if with_rates else 3.8),
                             squeeze=False, sharey="row",
                             gridspec_kw={"height_ratios": [3, 1.4]} if with_rates else None)
    axes = grid[:1]
    for j, (ax, model) in enumerate(zip(axes[0], models, strict=True)):
        m = _where(df, model=model)
        present = [i for i in INTERVENTION_ORDER
                   if len(_where(m, quantity="delta_gap", target=i))]
        x = np.arange(len(present))
        for xi, inter in zip(x, present, strict=True):
            row = _where(m, quantity="delta_gap", target=inter).row(0, named=True)
            e, lo, hi = _pp(row)
            color = FAMILY_COLORS[inter[0]]
            ax.bar(xi, e, 0.6, color=color if inter.endswith("amp") else "white",
                   edgecolor=color, hatch=None if inter.endswith("amp") else "///", lw=1.2)
            ax.errorbar(xi, e, yerr=[[e - lo], [hi - e]], fmt="none", ecolor="black",
                        capsize=3, lw=1)
            for tier, marker, dx in (("monitored", "^", -0.18), ("unmonitored", "v", 0.18)):
                t = _where(m, quantity=f"delta_{tier}", target=inter)
                if len(t):
                    ax.plot(xi + dx, _float(t["estimate"][0]) * 100, marker, ms=4,
                            color=TIER_COLORS[tier], zorder=3)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [_label(i) for i in present], fontsize=8)
        ax.set_title(f"{display_names.get(model, model)}\n{_sens_text(m)}", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        if with_rates:
            _no_answer_panel(grid[1][j], rates, model, present)
    axes[0][0].set_ylabel("\u0394 AF gap vs. noise adapter (pp)")
    if with_rates:
        grid[1][0].set_ylabel("no parsed answer (%)\ntruncated + unparseable", fontsize=7)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=FAMILY_COLORS["A"], label="A: researcher expectations"),
        plt.Rectangle((0, 0), 1, 1, color=FAMILY_COLORS["B"], label="B: consequences"),
        plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="grey", hatch="///",
                      label="suppress (\u2212)"),
        plt.Line2D([], [], ls="", marker="^", color=TIER_COLORS["monitored"],
                   label="\u0394 monitored compliance"),
        plt.Line2D([], [], ls="", marker="v", color=TIER_COLORS["unmonitored"],
                   label="\u0394 unmonitored compliance"),
    ]
    if with_rates:
        handles += [plt.Rectangle((0, 0), 1, 1, color="grey", label="truncated (lower row; "
                                  "left monitored, right unmonitored)"),
                    plt.Rectangle((0, 0), 1, 1, color="grey", alpha=0.35, hatch=".....",
                                  label="unparseable")]
    level = int(round(_float(df["ci_level"][0]) * 100))
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=4 if with_rates else 5,
               frameon=False, bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"SDF interventions: effect on the alignment-faking gap ({level}% CIs)",
                 fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi)


def sdf_strength_sweep(effects: pl.DataFrame, display_names: Mapping[str, str],
                       outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Appendix B.2: each intervention's effect on the gap vs. document directness."""
    df = _where(effects, quantity="delta_gap", naming="original")
    models = sorted(df["model"].unique().to_list())
    strengths = [s for s in STRENGTH_ORDER if s in set(df["strength"].to_list())]
    if len(strengths) < 2:
        raise ValueError("the strength sweep needs at least two strengths in sdf.strengths")
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.6), squeeze=False,
                             sharey=True)
    x = np.arange(len(strengths))
    for ax, model in zip(axes[0], models, strict=True):
        m = _where(df, model=model)
        for k, inter in enumerate(i for i in INTERVENTION_ORDER
                                  if i in set(m["target"].to_list())):
            rows = _where(m, target=inter)
            if rows["strength"].is_duplicated().any():
                raise ValueError(f"sdf_strength_sweep: {model} {inter}: more than one delta_gap "
                                 "row for one strength (cannot reindex on an axis with "
                                 "duplicate labels)")
            rows = _first_rows(rows, "strength", strengths, ["estimate", "ci_low", "ci_high"])
            e = rows["estimate"] * 100
            lo = rows["ci_low"] * 100
            hi = rows["ci_high"] * 100
            ax.errorbar(x + (k - 3.5) * 0.03, e, yerr=[e - lo, hi - e], capsize=2, lw=1,
                        color=FAMILY_COLORS[inter[0]],
                        ls="-" if inter.endswith("amp") else "--",
                        marker="o" if inter[1] == "1" else "s", ms=3, label=_label(inter))
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, strengths)
        ax.set_title(display_names.get(model, model), fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].set_ylabel("\u0394 AF gap vs. noise adapter (pp)")
    axes[0][-1].legend(fontsize=7, frameon=False, ncol=2)
    fig.suptitle("SDF strength sweep: document directness", fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi)


def sdf_role_play(effects: pl.DataFrame, display_names: Mapping[str, str],
                  outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Appendix B.3: S_A and S_B with the original AI name vs. the model's own name."""
    df = effects.filter(pl.col("quantity").is_in(["S_A", "S_B"]),
                        pl.col("strength").eq_missing("standard"))
    models = sorted(df["model"].unique().to_list())
    if not len(_where(df, naming="self")):
        raise ValueError("the role-play figure needs sdf.role_play.enabled")
    fig, axes = plt.subplots(1, len(models), figsize=(3.8 * len(models), 3.4), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        m = _where(df, model=model)
        for j, naming in enumerate(("original", "self")):
            for k, q in enumerate(("S_A", "S_B")):
                r = _where(m, naming=naming, quantity=q)
                if r.is_empty():
                    continue
                e, lo, hi = _pp(r.row(0, named=True))
                xi = k + (j - 0.5) * 0.38
                ax.bar(xi, e, 0.36, color=FAMILY_COLORS[q[-1]],
                       alpha=1.0 if naming == "original" else 0.5,
                       label=f"{q}, " + ("AI name as in the setting" if naming == "original"
                                         else "own name"))
                ax.errorbar(xi, e, yerr=[[e - lo], [hi - e]], fmt="none", ecolor="black",
                            capsize=3, lw=1)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks([0, 1], ["S_A", "S_B"])
        ax.set_title(display_names.get(model, model), fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].set_ylabel("net sensitivity (pp)")
    axes[0][-1].legend(fontsize=6, frameon=False)
    fig.suptitle("Role-play ablation: the AI's name in system prompt and documents",
                 fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi)
