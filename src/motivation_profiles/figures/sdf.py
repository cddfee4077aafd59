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
    _label,
    save,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _pp(row: pd.Series) -> tuple[float, float, float]:
    return (row["estimate"] * 100, row["ci_low"] * 100, row["ci_high"] * 100)


def _sens_text(df: pd.DataFrame) -> str:
    parts = []
    for fam in ("A", "B"):
        r = df[(df["quantity"] == f"S_{fam}")]
        if len(r):
            e, lo, hi = _pp(r.iloc[0])
            parts.append(f"S_{fam} = {e:+.1f} pp [{lo:+.1f}, {hi:+.1f}]")
    return "   ".join(parts)


def sdf_profile(effects: pd.DataFrame, display_names: Mapping[str, str],
                outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Figure 3: per model, each SDF intervention's effect on the AF gap against the noise
    adapter (bars, CI), the shift of each tier's compliance (markers), and S_A / S_B."""
    df = effects[(effects["strength"] == "standard") & (effects["naming"] == "original")]
    models = sorted(df["model"].unique())
    if not models:
        raise ValueError("no standard-strength SDF effects to draw")
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.8), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        m = df[df["model"] == model]
        present = [i for i in INTERVENTION_ORDER
                   if ((m["quantity"] == "delta_gap") & (m["target"] == i)).any()]
        x = np.arange(len(present))
        for xi, inter in zip(x, present, strict=True):
            row = m[(m["quantity"] == "delta_gap") & (m["target"] == inter)].iloc[0]
            e, lo, hi = _pp(row)
            color = FAMILY_COLORS[inter[0]]
            ax.bar(xi, e, 0.6, color=color if inter.endswith("amp") else "white",
                   edgecolor=color, hatch=None if inter.endswith("amp") else "///", lw=1.2)
            ax.errorbar(xi, e, yerr=[[e - lo], [hi - e]], fmt="none", ecolor="black",
                        capsize=3, lw=1)
            for tier, marker, dx in (("monitored", "^", -0.18), ("unmonitored", "v", 0.18)):
                t = m[(m["quantity"] == f"delta_{tier}") & (m["target"] == inter)]
                if len(t):
                    ax.plot(xi + dx, t.iloc[0]["estimate"] * 100, marker, ms=4,
                            color=TIER_COLORS[tier], zorder=3)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, [_label(i) for i in present], fontsize=8)
        ax.set_title(f"{display_names.get(model, model)}\n{_sens_text(m)}", fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].set_ylabel("\u0394 AF gap vs. noise adapter (pp)")
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
    level = int(round(float(df["ci_level"].iloc[0]) * 100))
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=5, frameon=False,
               bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"SDF interventions: effect on the alignment-faking gap ({level}% CIs)",
                 fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi)


def sdf_strength_sweep(effects: pd.DataFrame, display_names: Mapping[str, str],
                       outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Appendix B.2: each intervention's effect on the gap vs. document directness."""
    df = effects[(effects["quantity"] == "delta_gap") & (effects["naming"] == "original")]
    models = sorted(df["model"].unique())
    strengths = [s for s in STRENGTH_ORDER if s in set(df["strength"])]
    if len(strengths) < 2:
        raise ValueError("the strength sweep needs at least two strengths in sdf.strengths")
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.6), squeeze=False,
                             sharey=True)
    x = np.arange(len(strengths))
    for ax, model in zip(axes[0], models, strict=True):
        m = df[df["model"] == model]
        for k, inter in enumerate(i for i in INTERVENTION_ORDER if i in set(m["target"])):
            rows = m[m["target"] == inter].set_index("strength").reindex(strengths)
            e = rows["estimate"].to_numpy() * 100
            lo = rows["ci_low"].to_numpy() * 100
            hi = rows["ci_high"].to_numpy() * 100
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


def sdf_role_play(effects: pd.DataFrame, display_names: Mapping[str, str],
                  outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Appendix B.3: S_A and S_B with the original AI name vs. the model's own name."""
    df = effects[effects["quantity"].isin(["S_A", "S_B"]) & (effects["strength"] == "standard")]
    models = sorted(df["model"].unique())
    if not (df["naming"] == "self").any():
        raise ValueError("the role-play figure needs sdf.role_play.enabled")
    fig, axes = plt.subplots(1, len(models), figsize=(3.8 * len(models), 3.4), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        m = df[df["model"] == model]
        for j, naming in enumerate(("original", "self")):
            for k, q in enumerate(("S_A", "S_B")):
                r = m[(m["naming"] == naming) & (m["quantity"] == q)]
                if r.empty:
                    continue
                e, lo, hi = _pp(r.iloc[0])
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
