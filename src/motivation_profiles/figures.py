"""Paper figures, drawn from the metrics tables alone (no model, no GPU, no API)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .config import TIERS  # noqa: E402
from .provenance import atomic_path  # noqa: E402

TIER_LABELS = {"monitored": "monitored (free tier)", "unmonitored": "unmonitored (paid tier)"}
TIER_COLORS = {"monitored": "#c0392b", "unmonitored": "#2c7fb8"}


def save(fig, outputs: Sequence[str | Path], dpi: int) -> None:
    """Save one figure to each output path (format from the suffix), atomically."""
    for out in outputs:
        out = Path(out)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=out.suffix.lstrip("."), dpi=dpi, bbox_inches="tight",
                        metadata={"Creator": "motivation-profiles"} if out.suffix == ".pdf"
                        else None)
    plt.close(fig)


def baseline_compliance(metrics: pd.DataFrame, display_names: Mapping[str, str],
                        outputs: Sequence[str | Path], *, dpi: int = 150,
                        condition: str = "baseline") -> None:
    """Figure 2's shape: baseline compliance per tier and model, with CIs and the paired gap."""
    df = metrics[metrics["condition"] == condition].sort_values("model")
    if df.empty:
        raise ValueError(f"no rows for condition {condition!r} in the metrics tables")
    x = np.arange(len(df))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(df) + 1.5), 3.6))
    for j, tier in enumerate(TIERS):
        rate = df[f"{tier}_compliance"].to_numpy() * 100
        lo = df[f"{tier}_compliance_ci_low"].to_numpy() * 100
        hi = df[f"{tier}_compliance_ci_high"].to_numpy() * 100
        pos = x + (j - 0.5) * width
        ax.bar(pos, rate, width, color=TIER_COLORS[tier], label=TIER_LABELS[tier], alpha=0.9)
        ax.errorbar(pos, rate, yerr=[rate - lo, hi - rate], fmt="none", ecolor="black",
                    capsize=3, lw=1)
    level = int(round(float(df["ci_level"].iloc[0]) * 100))
    for xi, (_, r) in zip(x, df.iterrows(), strict=True):
        top = max(r["monitored_compliance_ci_high"], r["unmonitored_compliance_ci_high"]) * 100
        # share of rollouts (both tiers) without a parsed answer
        no_answer = 100 * np.mean([r[f"{t}_unparseable"] + r[f"{t}_truncated"] for t in TIERS])
        ax.annotate(
            f"gap {r['gap'] * 100:+.1f} pp\n[{r['gap_ci_low'] * 100:+.1f}, "
            f"{r['gap_ci_high'] * 100:+.1f}]\nn={int(r['n_pairs'])} pairs\n"
            f"no parsed answer: {no_answer:.0f}%",
            (xi, min(top + 3, 100)), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, [display_names.get(m, m) for m in df["model"]], fontsize=8)
    ax.set_ylabel("compliance with harmful requests (%)")
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_title(f"Baseline alignment-faking evaluation ({level}% CIs)", fontsize=10)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    save(fig, outputs, dpi)


# ----------------------------------------------------------------------------- SDF

INTERVENTION_ORDER = ["A1_amp", "A1_sup", "A2_amp", "A2_sup",
                      "B1_amp", "B1_sup", "B2_amp", "B2_sup"]
FAMILY_COLORS = {"A": "#7b3294", "B": "#e08214"}
STRENGTH_ORDER = ["weak", "standard", "strong"]


def _label(intervention: str) -> str:
    return intervention.replace("_amp", "+").replace("_sup", "\u2212")


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


# ----------------------------------------------------------------------------- profiles

PROFILE_QUANTITIES = ("S_A", "S_B")
METHOD_ORDER = ("prompt", "sdf", "steering")
METHOD_MARKERS = {"prompt": "o", "sdf": "s", "steering": "^"}
METHOD_LABELS = {"prompt": "prompt", "sdf": "SDF", "steering": "steering"}
BASE_COLOR = "black"
PROFILE_COLUMNS = ["S_A", "S_A_low", "S_A_high", "S_B", "S_B_low", "S_B_high"]


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """ValueError when ``df`` is empty or lacks one of ``columns`` (named in the message)."""
    if df is None or len(df) == 0:
        raise ValueError(f"{what}: the input table is empty")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the input table lacks column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, df.columns))})")


def _null(value: object) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, arrays
        return False


def _pick_strength(values: Sequence[object]) -> object:
    """``standard`` if present, else the first of weak/strong, else any other, else None."""
    present = list(dict.fromkeys(None if _null(v) else v for v in values))
    ranked = ([s for s in ("standard", *STRENGTH_ORDER) if s in present]
              + sorted(str(s) for s in present if s is not None and s not in STRENGTH_ORDER)
              + [None] * (None in present))
    return ranked[0] if ranked else None


def _pick_rows(group: pd.DataFrame) -> tuple[pd.DataFrame, object, object]:
    """Within one (model, method[, checkpoint]) group: the rows of the preferred naming
    ("original", or unlabelled) and strength (see ``_pick_strength``)."""
    naming = "original"
    if "naming" in group.columns:
        original = group["naming"].isna() | (group["naming"] == "original")
        if original.any():
            group = group[original]
        else:
            naming = sorted(group["naming"].astype(str).unique())[0]
            group = group[group["naming"].astype(str) == naming]
    strength = None
    if "strength" in group.columns:
        strength = _pick_strength(list(group["strength"]))
        group = group[group["strength"].isna() if strength is None
                      else group["strength"] == strength]
    return group, strength, naming


def _wide_profiles(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per ``keys`` group: S_A, S_B with CIs (fractions, NaN when absent), and the
    strength and naming the values were taken from."""
    s = df[df["quantity"].isin(PROFILE_QUANTITIES)]
    rows = []
    for key, group in s.groupby(list(keys), sort=True, dropna=False):
        picked, strength, naming = _pick_rows(group)
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row.update(strength=strength, naming=naming)
        for q in PROFILE_QUANTITIES:
            r = picked[picked["quantity"] == q]
            vals = ((r.iloc[0]["estimate"], r.iloc[0]["ci_low"], r.iloc[0]["ci_high"])
                    if len(r) else (np.nan,) * 3)
            for suffix, v in zip(("", "_low", "_high"), vals, strict=True):
                row[f"{q}{suffix}"] = float(v) if not _null(v) else np.nan
        row["ci_level"] = (float(picked["ci_level"].dropna().iloc[0])
                           if "ci_level" in picked.columns and picked["ci_level"].notna().any()
                           else np.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "strength", "naming", *PROFILE_COLUMNS,
                                       "ci_level"])


def profile_points(profiles: pd.DataFrame) -> pd.DataFrame:
    """The points of the profile plane: one row per (model, method) with S_A and S_B (and CIs,
    as fractions) of the base model (``checkpoint`` null), preferring naming "original" and
    strength "standard" (else the only / first strength the method has)."""
    df = profiles
    if "checkpoint" in df.columns:
        df = df[df["checkpoint"].isna()]
    if "method" not in df.columns:
        df = df.assign(method="prompt")
    out = _wide_profiles(df, ["model", "method"])
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    out["_o"] = out["method"].map(lambda m: order.get(m, len(order)))
    return (out.sort_values(["model", "_o", "method"]).drop(columns="_o")
            .reset_index(drop=True))


def _errs(est: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Non-negative error-bar lengths (a percentile CI may exclude its point estimate;
    NaN bounds give no bar)."""
    lower = np.nan_to_num(np.clip(est - lo, 0, None), nan=0.0)
    upper = np.nan_to_num(np.clip(hi - est, 0, None), nan=0.0)
    return np.vstack([lower, upper])


def _square_limits(values: Sequence[float], *, min_span: float = 2.0) -> tuple[float, float]:
    """Common x / y limits (pp) covering every finite value and 0, at least ``min_span``."""
    v = np.asarray([x for x in values if np.isfinite(x)] + [0.0], float)
    lo, hi = float(v.min()), float(v.max())
    pad = max((hi - lo) * 0.12, (min_span - (hi - lo)) / 2, 0.0)
    return lo - pad, hi + pad


def _plane_axes(ax, limits: tuple[float, float], *, labels: bool = True,
                fontsize: float = 7) -> None:
    """The diagonal y = x, equal limits, zero lines and the two half-plane labels."""
    ax.plot(limits, limits, color="grey", lw=0.8, ls="--", zorder=0)
    ax.axhline(0, color="lightgrey", lw=0.6, zorder=0)
    ax.axvline(0, color="lightgrey", lw=0.6, zorder=0)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal", adjustable="box")
    if labels:
        ax.text(0.97, 0.03, "expectation-sensitive", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=fontsize, color="grey", style="italic")
        ax.text(0.03, 0.97, "consequence-sensitive", transform=ax.transAxes, ha="left",
                va="top", fontsize=fontsize, color="grey", style="italic")
    ax.set_xlabel("S_A: expectation sensitivity (pp)", fontsize=8)
    ax.set_ylabel("S_B: consequence sensitivity (pp)", fontsize=8)
    ax.tick_params(labelsize=7)


def _plane_limits(points: pd.DataFrame) -> tuple[float, float]:
    return _square_limits(list(points[PROFILE_COLUMNS].to_numpy(float).ravel() * 100))


def _level_text(df: pd.DataFrame) -> str:
    if "ci_level" in df.columns and df["ci_level"].notna().any():
        return f"{int(round(float(df['ci_level'].dropna().iloc[0]) * 100))}% CIs"
    return "CIs"


def _recovered_text(model_rows: pd.DataFrame) -> str:
    if "recovered" not in model_rows.columns:
        return "n.a."
    values = [v for v in model_rows["recovered"] if not _null(v)]
    if not values:
        return "n.a."
    v = values[0]
    if isinstance(v, str):
        v = v.strip().lower() in ("true", "yes", "1")
    return "yes" if bool(v) else "no"


def _family_of_checkpoint(row: pd.Series) -> str:
    fam = row.get("checkpoint_family")
    if _null(row.get("checkpoint")):
        return "base"
    if not _null(fam) and fam in FAMILY_COLORS:
        return str(fam)
    return str(row["checkpoint"])[:1] if str(row["checkpoint"])[:1] in FAMILY_COLORS else "?"


CALIBRATION_COLUMNS = ["model", "checkpoint", "checkpoint_family", "strength", "quantity",
                       "estimate", "ci_low", "ci_high"]


def calibration_points(calibration: pd.DataFrame) -> pd.DataFrame:
    """Per (model, checkpoint) the prompt S_A / S_B (fractions, CIs), the checkpoint's family
    ("A", "B", "base") and the consequence share S_B - S_A; base model first, then A, then B."""
    df = calibration
    if "method" in df.columns:
        df = df[df["method"].isna() | (df["method"] == "prompt")]
    keyed = df.assign(_ckpt=df["checkpoint"].astype(object).where(df["checkpoint"].notna(),
                                                                   "base"))
    wide = _wide_profiles(keyed, ["model", "_ckpt"])
    families = (keyed.drop_duplicates(["model", "_ckpt"])
                .assign(family=lambda d: d.apply(_family_of_checkpoint, axis=1))
                .set_index(["model", "_ckpt"])["family"])
    wide["family"] = [families.get((m, c), "?") for m, c in zip(wide["model"], wide["_ckpt"],
                                                                 strict=True)]
    wide = wide.rename(columns={"_ckpt": "checkpoint"})
    wide["share"] = wide["S_B"] - wide["S_A"]
    rank = {"base": 0, "A": 1, "B": 2}
    wide["_r"] = wide["family"].map(lambda f: rank.get(f, 3))
    return (wide.sort_values(["model", "_r", "checkpoint"]).drop(columns="_r")
            .reset_index(drop=True))


def _ckpt_color(family: str) -> str:
    return BASE_COLOR if family == "base" else FAMILY_COLORS.get(family, "grey")


def prompt_calibration(df: pd.DataFrame, display_names: Mapping[str, str],
                       outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Figure 5a: prompt profiles of SDF checkpoints whose family is known by construction.

    Per model (one column): top, the profile plane with one point per checkpoint (prompt S_A vs
    S_B, CIs), A-family purple, B-family orange, the base model black; bottom, the consequence
    share S_B - S_A per checkpoint with each family's mean (dashed), whose order decides
    ``recovered`` (B mean > A mean). Reads ``results/calibration/{model}/calibration.parquet``.
    """
    _require(df, CALIBRATION_COLUMNS, "prompt_calibration")
    points = calibration_points(df)
    models = sorted(df["model"].dropna().unique())
    any_checkpoint = bool(df["checkpoint"].notna().any())
    limits = _plane_limits(points) if len(points) else _square_limits([])
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models), 7.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for j, model in enumerate(models):
        ax, bx = axes[0][j], axes[1][j]
        p = points[points["model"] == model]
        for _, r in p.iterrows():
            color = _ckpt_color(r["family"])
            x, y = r["S_A"] * 100, r["S_B"] * 100
            xerr = _errs(np.array([x]), np.array([r["S_A_low"] * 100]),
                         np.array([r["S_A_high"] * 100]))
            yerr = _errs(np.array([y]), np.array([r["S_B_low"] * 100]),
                         np.array([r["S_B_high"] * 100]))
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", color=color, ms=5,
                        capsize=2, lw=1, zorder=3)
            if np.isfinite(x) and np.isfinite(y):
                ax.annotate(_label(str(r["checkpoint"])), (x, y), xytext=(4, 4),
                            textcoords="offset points", fontsize=7, color=color)
        _plane_axes(ax, limits)
        has_ckpt = bool((df.loc[df["model"] == model, "checkpoint"].notna()).any())
        if not has_ckpt:
            ax.text(0.5, 0.5, "no qualifying SDF checkpoints\n(base model only)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8,
                    color="grey")
        strength = p["strength"].dropna().iloc[0] if p["strength"].notna().any() else None
        rows = df[df["model"] == model]
        ax.set_title(f"{display_names.get(model, model)}\nfamily recovered: "
                     f"{_recovered_text(rows)}"
                     + (f"   (claims: {strength})" if strength else ""), fontsize=9)
        # bottom: consequence share per checkpoint
        x = np.arange(len(p))
        share = p["share"].to_numpy(float) * 100
        colors = [_ckpt_color(f) for f in p["family"]]
        bx.bar(x, np.nan_to_num(share), 0.6, color=colors, edgecolor=colors)
        for xi, v in zip(x, share, strict=True):
            bx.annotate("n.a." if not np.isfinite(v) else f"{v:+.1f}", (xi, 0 if not
                        np.isfinite(v) else v), xytext=(0, 3 if not np.isfinite(v) or v >= 0
                                                         else -9),
                        textcoords="offset points", ha="center", fontsize=7)
        for fam in ("A", "B"):
            sel = (p["family"] == fam).to_numpy()
            vals = share[sel]
            if sel.any() and np.isfinite(vals).any():
                xs = x[sel]
                bx.hlines(np.nanmean(vals), xs.min() - 0.4, xs.max() + 0.4,
                          colors=FAMILY_COLORS[fam], linestyles="--", lw=1)
        bx.axhline(0, color="black", lw=0.8)
        bx.set_xticks(x, [_label(str(c)) for c in p["checkpoint"]], fontsize=7)
        bx.set_ylabel("consequence share S_B \u2212 S_A (pp)", fontsize=8)
        bx.tick_params(labelsize=7)
        bx.spines[["top", "right"]].set_visible(False)
        finite = share[np.isfinite(share)]
        lo, hi = _square_limits(list(finite))
        bx.set_ylim(min(lo, -1.0), max(hi, 1.0))
        spare = max(0.0, (3 - len(p)) / 2)
        bx.set_xlim(-0.5 - spare, len(p) - 0.5 + spare)
        if len(p) == 0:
            bx.text(0.5, 0.5, "no S_A / S_B rows", transform=bx.transAxes, ha="center",
                    va="center", fontsize=8, color="grey")
    handles = [
        plt.Line2D([], [], ls="", marker="o", color=BASE_COLOR, label="base model"),
        plt.Line2D([], [], ls="", marker="o", color=FAMILY_COLORS["A"],
                   label="A-family checkpoint (researcher expectations)"),
        plt.Line2D([], [], ls="", marker="o", color=FAMILY_COLORS["B"],
                   label="B-family checkpoint (consequences)"),
        plt.Line2D([], [], ls="--", color="grey", label="family mean share / diagonal"),
    ]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=4, frameon=False,
               bbox_to_anchor=(0.5, -0.03))
    title = f"Prompt interventions on SDF checkpoints of known family ({_level_text(df)})"
    if not any_checkpoint:
        title += "\nno model has qualifying SDF checkpoints (Appendix C.1 rule): base models only"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi)


def profile_plane(df: pd.DataFrame, display_names: Mapping[str, str],
                  outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Figure 5b: every model's comparative profile (S_A, S_B) per method on one plane.

    Marker shape per method, colour per model, CIs in both axes, an arrow from the prompt to the
    SDF profile where both exist. Points: ``profile_points`` (base model, standard strength,
    original naming preferred). Reads ``results/metrics/profiles.parquet``.
    """
    _require(df, ["model", "method", "quantity", "estimate", "ci_low", "ci_high"],
             "profile_plane")
    points = profile_points(df)
    points = points[points[["S_A", "S_B"]].notna().any(axis=1)
                    | points[["S_A_low", "S_B_low"]].notna().any(axis=1)]
    if points.empty:
        raise ValueError("profile_plane: no base-model S_A / S_B rows (quantity S_A or S_B "
                         "with a null checkpoint) in the input table")
    models = sorted(points["model"].unique())
    cmap = plt.get_cmap("tab10")
    colors = {m: cmap(i % 10) for i, m in enumerate(models)}
    limits = _plane_limits(points)
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    for model in models:
        p = points[points["model"] == model].set_index("method")
        for method, r in p.iterrows():
            x, y = r["S_A"] * 100, r["S_B"] * 100
            xerr = _errs(np.array([x]), np.array([r["S_A_low"] * 100]),
                         np.array([r["S_A_high"] * 100]))
            yerr = _errs(np.array([y]), np.array([r["S_B_low"] * 100]),
                         np.array([r["S_B_high"] * 100]))
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=METHOD_MARKERS.get(method, "D"),
                        color=colors[model], ms=7, capsize=2, lw=1, alpha=0.9, zorder=3,
                        mfc=colors[model] if method != "steering" else "white")
        if {"prompt", "sdf"} <= set(p.index):
            a, b = p.loc["prompt"], p.loc["sdf"]
            start, end = (a["S_A"] * 100, a["S_B"] * 100), (b["S_A"] * 100, b["S_B"] * 100)
            if np.isfinite([*start, *end]).all() and start != end:
                ax.annotate("", xy=end, xytext=start, zorder=2,
                            arrowprops={"arrowstyle": "->", "color": colors[model],
                                        "lw": 1.2, "shrinkA": 4, "shrinkB": 5})
    _plane_axes(ax, limits, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colors[m],
                          label=display_names.get(m, m)) for m in models]
    methods = [m for m in METHOD_ORDER if m in set(points["method"])]
    methods += sorted(set(points["method"]) - set(METHOD_ORDER))
    handles += [plt.Line2D([], [], ls="", marker=METHOD_MARKERS.get(m, "D"), color="grey",
                           mfc="grey" if m != "steering" else "white",
                           label=METHOD_LABELS.get(m, m)) for m in methods]
    if {"prompt", "sdf"} <= set(methods):
        handles.append(plt.Line2D([], [], color="grey", marker=">", ms=4,
                                  label="prompt \u2192 SDF"))
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper left",
              bbox_to_anchor=(1.02, 1.0))
    ax.set_title(f"Comparative motivation profiles ({_level_text(df)})", fontsize=10)
    save(fig, outputs, dpi)


def prompt_strength_ablation(df: pd.DataFrame, display_names: Mapping[str, str],
                             outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Figure 9 (Appendix C.2): prompt S_A and S_B (lines, CI bands) vs. claim strength, with
    each intervention's effect on the gap (faint markers: amplify filled, suppress hollow).
    Reads ``results/metrics/{model}/prompt_effects.parquet``."""
    _require(df, ["model", "strength", "quantity", "target", "estimate", "ci_low", "ci_high"],
             "prompt_strength_ablation")
    d = df
    if "method" in d.columns:
        d = d[d["method"].isna() | (d["method"] == "prompt")]
    if "checkpoint" in d.columns:
        d = d[d["checkpoint"].isna()]
    if "naming" in d.columns:
        d = d[d["naming"].isna() | (d["naming"] == "original")]
    models = sorted(d["model"].dropna().unique())
    if not models:
        raise ValueError("prompt_strength_ablation: no base-model prompt rows in the input")
    fig, axes = plt.subplots(1, len(models), figsize=(4.4 * len(models), 3.8), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        m = d[d["model"] == model]
        strengths = [s for s in STRENGTH_ORDER if s in set(m["strength"].dropna())]
        x = np.arange(len(strengths))
        inters = [i for i in INTERVENTION_ORDER
                  if ((m["quantity"] == "delta_gap") & (m["target"] == i)).any()]
        for k, inter in enumerate(inters):
            rows = (m[(m["quantity"] == "delta_gap") & (m["target"] == inter)]
                    .drop_duplicates("strength").set_index("strength").reindex(strengths))
            color = FAMILY_COLORS[inter[0]]
            ax.plot(x + (k - 3.5) * 0.025, rows["estimate"].to_numpy(float) * 100,
                    ls="", marker="o" if inter[1] == "1" else "s", ms=4, alpha=0.45,
                    color=color, mfc=color if inter.endswith("amp") else "none", zorder=2)
        for q in PROFILE_QUANTITIES:
            rows = (m[m["quantity"] == q].drop_duplicates("strength").set_index("strength")
                    .reindex(strengths))
            if rows["estimate"].isna().all() and rows["ci_low"].isna().all():
                continue
            e = rows["estimate"].to_numpy(float) * 100
            lo = rows["ci_low"].to_numpy(float) * 100
            hi = rows["ci_high"].to_numpy(float) * 100
            color = FAMILY_COLORS[q[-1]]
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
            ax.errorbar(x, e, yerr=_errs(e, lo, hi), color=color, lw=2, marker="D", ms=5,
                        capsize=3, zorder=3)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(x, strengths)
        if len(strengths) == 1:
            ax.set_xlim(-0.6, 0.6)
        ax.set_xlabel("claim strength", fontsize=8)
        ax.set_title(display_names.get(model, model), fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)
        if not strengths:
            ax.text(0.5, 0.5, "no prompt strengths", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="grey")
    axes[0][0].set_ylabel("effect on the AF gap vs. no claim (pp)")
    handles = [
        plt.Line2D([], [], color=FAMILY_COLORS["A"], lw=2, marker="D",
                   label="S_A (expectations)"),
        plt.Line2D([], [], color=FAMILY_COLORS["B"], lw=2, marker="D",
                   label="S_B (consequences)"),
        plt.Line2D([], [], ls="", marker="o", color="grey", alpha=0.6,
                   label="\u0394 gap, amplify (k=1 \u25cb, k=2 \u25a1)"),
        plt.Line2D([], [], ls="", marker="o", color="grey", mfc="none", alpha=0.6,
                   label="\u0394 gap, suppress"),
    ]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=4, frameon=False,
               bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"Prompt interventions: claim strength ablation ({_level_text(d)})",
                 fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi)


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


def judge_scores(df: pd.DataFrame, display_names: Mapping[str, str],
                 outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """The judge's Direction A / B scores per condition and tier (one row of two panels per
    model): jittered strips, the mean with a 95% CI, and scored / total per condition.
    Reads ``results/judge/{model}/{condition}.parquet``."""
    _require(df, JUDGE_COLUMNS, "judge_scores")
    models = sorted(df["model"].dropna().unique())
    orders = {m: judge_condition_order(df.loc[df["model"] == m, "condition"]) for m in models}
    heights = [0.32 * max(len(orders[m]), 1) + 1.0 for m in models]
    total = sum(heights) + 0.6
    fig = plt.figure(figsize=(10.0, total))
    grid = fig.add_gridspec(len(models), 2, height_ratios=heights, top=1 - 0.85 / total,
                            hspace=1.1 / float(np.mean(heights)), wspace=0.16)
    rng = np.random.default_rng(0)
    tiers = list(TIERS) + sorted(set(df["tier"].dropna().astype(str)) - set(TIERS))
    offsets = {t: (k - (len(tiers) - 1) / 2) * 0.34 / max(len(tiers) - 1, 1)
               for k, t in enumerate(tiers)}
    limits = {}
    for col in ("a_score", "b_score"):
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
        v = v[np.isfinite(v)]
        lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 1.0)
        pad = max((hi - lo) * 0.06, 0.25)
        limits[col] = (lo - pad, hi + pad)
    for i, model in enumerate(models):
        m = df[df["model"] == model]
        conds = orders[model]
        status = m["status"].value_counts()
        left = None
        for j, (col, direction) in enumerate((("a_score", "A: researcher expectations"),
                                              ("b_score", "B: consequences"))):
            ax = fig.add_subplot(grid[i, j], sharey=left)
            left = left or ax
            scores = pd.to_numeric(m[col], errors="coerce")
            for y, cond in enumerate(conds):
                in_cond = (m["condition"].astype(str) == cond).to_numpy()
                for tier in tiers:
                    sel = in_cond & (m["tier"].astype(str) == tier).to_numpy()
                    v = scores[sel].to_numpy(float)
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
                scored = int(np.isfinite(scores[in_cond].to_numpy(float)).sum())
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
            if not np.isfinite(scores.to_numpy(float)).any():
                ax.text(0.5, 0.5, "no parseable judge scores", transform=ax.transAxes,
                        ha="center", va="center", fontsize=9, color="grey",
                        bbox={"facecolor": "white", "edgecolor": "lightgrey"})
            if j == 0:
                stat = ", ".join(f"{k} {int(n)}" for k, n in status.items())
                ax.set_title(f"{display_names.get(model, model)}   (status: {stat})",
                             fontsize=8, loc="left")
    handles = [plt.Line2D([], [], ls="", marker="o", color=TIER_COLORS.get(t, "grey"),
                          label=TIER_LABELS.get(t, t)) for t in tiers]
    handles.append(plt.Line2D([], [], ls="-", marker="D", color="grey", mec="black",
                              label="mean \u00b1 95% CI"))
    judge = ""
    if "judge_model" in df.columns and df["judge_model"].notna().any():
        judge = " \u2014 judge: " + ", ".join(sorted(df["judge_model"].dropna()
                                                     .astype(str).unique()))
    fig.legend(handles=handles, fontsize=7, loc="upper center", ncol=len(handles),
               frameon=False, bbox_to_anchor=(0.5, 1.0 - 0.25 / fig.get_figheight()))
    fig.suptitle(f"Judge scores per condition (right: scored / total){judge}", fontsize=10,
                 y=1.0 + 0.15 / fig.get_figheight())
    save(fig, outputs, dpi)
