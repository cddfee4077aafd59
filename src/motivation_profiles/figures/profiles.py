"""Paper figures, drawn from the metrics tables alone (no model, no GPU, no API)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from motivation_profiles.figures.style import (
    FAMILY_COLORS,
    INTERVENTION_ORDER,
    STRENGTH_ORDER,
    _first_rows,
    _groups,
    _label,
    _na,
    _notna,
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

# ----------------------------------------------------------------------------- profiles

PROFILE_QUANTITIES = ("S_A", "S_B")


METHOD_ORDER = ("prompt", "sdf", "steering")


METHOD_MARKERS = {"prompt": "o", "sdf": "s", "steering": "^"}


METHOD_LABELS = {"prompt": "prompt", "sdf": "SDF", "steering": "steering"}


BASE_COLOR = "black"


PROFILE_COLUMNS = ["S_A", "S_A_low", "S_A_high", "S_B", "S_B_low", "S_B_high"]


def _pick_strength(values: Sequence[object]) -> object:
    """``standard`` if present, else the first of weak/strong, else any other, else None."""
    present = list(dict.fromkeys(None if _null(v) else v for v in values))
    ranked = ([s for s in ("standard", *STRENGTH_ORDER) if s in present]
              + sorted(str(s) for s in present if s is not None and s not in STRENGTH_ORDER)
              + [None] * (None in present))
    return ranked[0] if ranked else None


def _pick_rows(group: pl.DataFrame) -> tuple[pl.DataFrame, object, object]:
    """Within one (model, method[, checkpoint]) group: the rows of the preferred naming
    ("original", or unlabelled) and strength (see ``_pick_strength``)."""
    naming = "original"
    if "naming" in group.columns:
        original = _na(group, "naming") | pl.col("naming").eq_missing("original")
        if group.select(original.any()).item():
            group = group.filter(original)
        else:
            naming = sorted(str(v) for v in group["naming"].unique().to_list())[0]
            group = group.filter(pl.col("naming").cast(pl.String) == naming)
    strength = None
    if "strength" in group.columns:
        strength = _pick_strength(group["strength"].to_list())
        group = group.filter(_na(group, "strength") if strength is None
                             else pl.col("strength").eq_missing(strength))
    return group, strength, naming


def _wide_profiles(df: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """One row per ``keys`` group: S_A, S_B with CIs (fractions, NaN when absent), and the
    strength and naming the values were taken from."""
    s = df.filter(pl.col("quantity").is_in(PROFILE_QUANTITIES))
    rows = []
    for key, group in _groups(s, keys, dropna=False):
        picked, strength, naming = _pick_rows(group)
        row = dict(zip(keys, key, strict=True))
        row.update(strength=strength, naming=naming)
        for q in PROFILE_QUANTITIES:
            r = picked.filter(pl.col("quantity") == q)
            vals = ((r["estimate"][0], r["ci_low"][0], r["ci_high"][0])
                    if len(r) else (None,) * 3)
            for suffix, v in zip(("", "_low", "_high"), vals, strict=True):
                row[f"{q}{suffix}"] = float(v) if not _null(v) else np.nan
        levels = _valid(picked["ci_level"].to_list()) if "ci_level" in picked.columns else []
        row["ci_level"] = float(levels[0]) if levels else np.nan
        rows.append(row)
    schema = {**{k: df.schema[k] for k in keys}, "strength": pl.String, "naming": pl.String,
              **dict.fromkeys([*PROFILE_COLUMNS, "ci_level"], pl.Float64)}
    return pl.DataFrame(rows, schema=schema)


def _ranked(df: pl.DataFrame, column: str, rank: Mapping[object, int],
            by: Sequence[str]) -> pl.DataFrame:
    """``df`` sorted by ``by``, where ``_rank`` is the rank of ``column``'s value in ``rank``
    (values not in it last); stable, missing values last."""
    ranks = pl.Series("_rank", [rank.get(v, len(rank)) for v in df[column].to_list()],
                      dtype=pl.Int64)
    return (df.with_columns(ranks).sort(by, nulls_last=True, maintain_order=True)
            .drop("_rank"))


def profile_points(profiles: pl.DataFrame) -> pl.DataFrame:
    """The points of the profile plane: one row per (model, method) with S_A and S_B (and CIs,
    as fractions) of the base model (``checkpoint`` null), preferring naming "original" and
    strength "standard" (else the only / first strength the method has)."""
    df = profiles
    if "checkpoint" in df.columns:
        df = df.filter(_na(df, "checkpoint"))
    if "method" not in df.columns:
        df = df.with_columns(method=pl.lit("prompt"))
    out = _wide_profiles(df, ["model", "method"])
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return _ranked(out, "method", order, ["model", "_rank", "method"])


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


def _plane_limits(points: pl.DataFrame) -> tuple[float, float]:
    values = np.column_stack([_num(points[c]) for c in PROFILE_COLUMNS])
    return _square_limits(list(values.ravel() * 100))


def _level_text(df: pl.DataFrame) -> str:
    levels = _valid(df["ci_level"].to_list()) if "ci_level" in df.columns else []
    if levels:
        return f"{int(round(float(levels[0]) * 100))}% CIs"
    return "CIs"


def _recovered_text(model_rows: pl.DataFrame) -> str:
    if "recovered" not in model_rows.columns:
        return "n.a."
    values = _valid(model_rows["recovered"].to_list())
    if not values:
        return "n.a."
    v = values[0]
    if isinstance(v, str):
        v = v.strip().lower() in ("true", "yes", "1")
    return "yes" if bool(v) else "no"


def _family_of_checkpoint(row: Mapping[str, object]) -> str:
    fam = row.get("checkpoint_family")
    if _null(row.get("checkpoint")):
        return "base"
    if not _null(fam) and fam in FAMILY_COLORS:
        return str(fam)
    return str(row["checkpoint"])[:1] if str(row["checkpoint"])[:1] in FAMILY_COLORS else "?"


CALIBRATION_COLUMNS = ["model", "checkpoint", "checkpoint_family", "strength", "quantity",
                       "estimate", "ci_low", "ci_high"]


def calibration_points(calibration: pl.DataFrame) -> pl.DataFrame:
    """Per (model, checkpoint) the prompt S_A / S_B (fractions, CIs), the checkpoint's family
    ("A", "B", "base") and the consequence share S_B - S_A; base model first, then A, then B."""
    df = calibration
    if "method" in df.columns:
        df = df.filter(_na(df, "method") | pl.col("method").eq_missing("prompt"))
    keyed = df.with_columns(_ckpt=pl.when(_na(df, "checkpoint")).then(pl.lit("base"))
                            .otherwise(pl.col("checkpoint").cast(pl.String)))
    wide = _wide_profiles(keyed, ["model", "_ckpt"])
    families: dict[tuple, str] = {}  # from each (model, checkpoint)'s first row
    for row in keyed.iter_rows(named=True):
        if (row["model"], row["_ckpt"]) not in families:
            families[(row["model"], row["_ckpt"])] = _family_of_checkpoint(row)
    family = [families.get(k, "?") for k in zip(wide["model"].to_list(),
                                                 wide["_ckpt"].to_list(), strict=True)]
    wide = (wide.with_columns(family=pl.Series(family, dtype=pl.String))
            .rename({"_ckpt": "checkpoint"})
            .with_columns(share=pl.col("S_B") - pl.col("S_A")))
    if _recovery_signal(df) == "af_ratio":  # the share `recovered` compared: on the AF ratio
        ratio = (keyed.filter(pl.col("quantity").is_in(["S_A_af_ratio", "S_B_af_ratio"]))
                 .with_columns(quantity=pl.col("quantity").str.replace("_af_ratio", "")))
        rw = _wide_profiles(ratio, ["model", "_ckpt"]).rename({"_ckpt": "checkpoint"})
        shares = {(r["model"], r["checkpoint"]): r["S_B"] - r["S_A"]
                  for r in rw.iter_rows(named=True)}
        wide = wide.with_columns(share=pl.Series(
            [shares.get((m, c), np.nan) for m, c in zip(wide["model"].to_list(),
                                                        wide["checkpoint"].to_list(),
                                                        strict=True)], dtype=pl.Float64))
    return _ranked(wide, "family", {"base": 0, "A": 1, "B": 2}, ["model", "_rank", "checkpoint"])


def _recovery_signal(df: pl.DataFrame) -> str:
    """The signal ``recovered`` was decided on (``gap`` for tables without the column)."""
    if "recovery_signal" not in df.columns:
        return "gap"
    values = _valid(df["recovery_signal"].to_list())
    return str(values[0]) if values else "gap"


def _ckpt_color(family: str) -> str:
    return BASE_COLOR if family == "base" else FAMILY_COLORS.get(family, "grey")


def prompt_calibration(df: pl.DataFrame, display_names: Mapping[str, str],
                       outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Figure 5a: prompt profiles of SDF checkpoints whose family is known by construction.

    Per model (one column): top, the profile plane with one point per checkpoint (prompt S_A vs
    S_B, CIs), A-family purple, B-family orange, the base model black; bottom, the consequence
    share S_B - S_A per checkpoint with each family's mean (dashed), whose order decides
    ``recovered`` (B mean > A mean); measured on the AF ratio when the table's
    ``recovery_signal`` is ``af_ratio`` (S_A_af_ratio, S_B_af_ratio), else in pp of the gap.
    Reads ``results/calibration/{model}/calibration.parquet``.
    """
    _require(df, CALIBRATION_COLUMNS, "prompt_calibration")
    points = calibration_points(df)
    ratio_share = _recovery_signal(df) == "af_ratio"
    models = sorted(df["model"].drop_nulls().unique().to_list())
    any_checkpoint = bool(df.select(_notna(df, "checkpoint").any()).item())
    limits = _plane_limits(points) if len(points) else _square_limits([])
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models), 7.4), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for j, model in enumerate(models):
        ax, bx = axes[0][j], axes[1][j]
        p = points.filter(pl.col("model") == model)
        for r in p.iter_rows(named=True):
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
        rows = df.filter(pl.col("model") == model)
        has_ckpt = bool(rows.select(_notna(rows, "checkpoint").any()).item())
        if not has_ckpt:
            ax.text(0.5, 0.5, "no qualifying SDF checkpoints\n(base model only)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8,
                    color="grey")
        strength = next(iter(_valid(p["strength"].to_list())), None)
        ax.set_title(f"{display_names.get(model, model)}\nfamily recovered: "
                     f"{_recovered_text(rows)}"
                     + (f"   (claims: {strength})" if strength else ""), fontsize=9)
        # bottom: consequence share per checkpoint (on the signal `recovered` used)
        x = np.arange(len(p))
        share = _num(p["share"]) * (1.0 if ratio_share else 100.0)
        families = p["family"].to_list()
        colors = [_ckpt_color(f) for f in families]
        bx.bar(x, np.nan_to_num(share), 0.6, color=colors, edgecolor=colors)
        for xi, v in zip(x, share, strict=True):
            bx.annotate("n.a." if not np.isfinite(v) else
                    (f"{v:+.2f}" if ratio_share else f"{v:+.1f}"), (xi, 0 if not
                        np.isfinite(v) else v), xytext=(0, 3 if not np.isfinite(v) or v >= 0
                                                         else -9),
                        textcoords="offset points", ha="center", fontsize=7)
        for fam in ("A", "B"):
            sel = np.array([f == fam for f in families], dtype=bool)
            vals = share[sel]
            if sel.any() and np.isfinite(vals).any():
                xs = x[sel]
                bx.hlines(np.nanmean(vals), xs.min() - 0.4, xs.max() + 0.4,
                          colors=FAMILY_COLORS[fam], linestyles="--", lw=1)
        bx.axhline(0, color="black", lw=0.8)
        bx.set_xticks(x, [_label(str(c)) for c in p["checkpoint"].to_list()], fontsize=7)
        bx.set_ylabel("consequence share S_B \u2212 S_A "
                      + ("(AF ratio)" if ratio_share else "(pp)"), fontsize=8)
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


# ----------------------------------------------------------------------------- Figure 8

SELECTION_FIGURE_COLUMNS = ["model", "checkpoint", "family", "signal", "value",
                            "reference", "reference_value", "qualifies", "selected"]


def _col(df: pl.DataFrame, name: str) -> np.ndarray:
    """A float column as an array (NaN where null or absent: older selection tables)."""
    return _num(df[name]) if name in df.columns else np.full(len(df), np.nan)


def calibration_signal(df: pl.DataFrame, display_names: Mapping[str, str],
                       outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Figure 8 (Appendix C.1): per model (one panel), each candidate SDF checkpoint's
    alignment-faking signal with its CI (A-family purple, B-family orange) against the
    reference's (black line, grey CI band). Filled marker + star: selected; hollow: qualifies
    but not kept (``max_per_family``); grey cross: does not qualify. The title says whether
    the model qualifies (both families reach the reference) and the tolerance used. Reads
    ``results/calibration/{model}/selection.parquet``."""
    from motivation_profiles.metrics.calibration import SIGNAL_LABELS

    _require(df, SELECTION_FIGURE_COLUMNS, "calibration_signal")
    models = sorted(df["model"].drop_nulls().unique().to_list())
    if not models:
        raise ValueError("calibration_signal: no selection rows in the input tables")
    signals = sorted(set(_valid(df["signal"].to_list())))
    signal = signals[0] if len(signals) == 1 else None
    scale = 1.0 if signal == "af_ratio" else 100.0
    fig, axes = plt.subplots(1, len(models), figsize=(max(3.6, 3.4 * len(models)), 3.8),
                             squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        m = df.filter(pl.col("model") == model)
        m = m.with_columns(_fam=pl.col("family").replace_strict({"A": 0, "B": 1}, default=2,
                                                                return_dtype=pl.Int64))
        m = m.sort(["_fam", "checkpoint"], maintain_order=True)
        x = np.arange(len(m))
        value = _col(m, "value") * scale
        lo, hi = _col(m, "value_ci_low") * scale, _col(m, "value_ci_high") * scale
        ref = _col(m, "reference_value")[0] * scale if len(m) else np.nan
        ref_lo = _col(m, "reference_ci_low")[0] * scale if len(m) else np.nan
        ref_hi = _col(m, "reference_ci_high")[0] * scale if len(m) else np.nan
        if np.isfinite(ref_lo) and np.isfinite(ref_hi):
            ax.axhspan(ref_lo, ref_hi, color="lightgrey", alpha=0.6, lw=0, zorder=0)
        if np.isfinite(ref):
            ax.axhline(ref, color=BASE_COLOR, lw=1.2, zorder=1)
        rows = m.to_dicts()
        for xi, r, v, l_, h in zip(x, rows, value, lo, hi, strict=True):
            color = FAMILY_COLORS.get(r["family"], "grey")
            if np.isfinite(v) and np.isfinite(l_) and np.isfinite(h):
                ax.errorbar([xi], [v], yerr=_errs(np.array([v]), np.array([l_]), np.array([h])),
                            fmt="none", ecolor=color, capsize=3, lw=1, zorder=2)
            if not np.isfinite(v):
                ax.annotate("n.a.", (xi, 0), ha="center", fontsize=7, color="grey")
            elif r["selected"]:
                ax.plot([xi], [v], "o", color=color, ms=7, zorder=3)
                ax.annotate("\u2605", (xi, v), xytext=(0, 7), textcoords="offset points",
                            ha="center", fontsize=9, color=color)
            elif r["qualifies"]:
                ax.plot([xi], [v], "o", mfc="white", color=color, ms=7, zorder=3)
            else:
                ax.plot([xi], [v], "x", color="grey", ms=7, zorder=3)
        ax.set_xticks(x, [_label(str(c)) for c in m["checkpoint"].to_list()], fontsize=8)
        ok = m["model_qualifies"].any() if "model_qualifies" in m.columns else None
        tol = next(iter(_valid(m["tolerance"].to_list())), None) \
            if "tolerance" in m.columns else None
        verdict = "n.a." if ok is None else ("qualifies" if ok else "excluded")
        ax.set_title(f"{display_names.get(model, model)}: {verdict}"
                     + (f"\n(tolerance: {tol})" if tol else ""), fontsize=9)
        ax.set_xlim(-0.6, max(len(m), 1) - 0.4)
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=7)
    unit = "" if scale == 1.0 else " (pp)"
    axes[0][0].set_ylabel((SIGNAL_LABELS.get(signal, "signal") if signal else
                           "signal (" + ", ".join(signals) + ")") + unit, fontsize=7)
    refs = sorted(set(_valid(df["reference"].to_list())))
    handles = [
        plt.Line2D([], [], color=BASE_COLOR, lw=1.2,
                   label=f"reference ({', '.join(refs) or 'n.a.'}), CI band"),
        plt.Line2D([], [], ls="", marker="o", color=FAMILY_COLORS["A"], label="A-family"),
        plt.Line2D([], [], ls="", marker="o", color=FAMILY_COLORS["B"], label="B-family"),
        plt.Line2D([], [], ls="", marker="$\u2605$", color="grey", label="selected"),
        plt.Line2D([], [], ls="", marker="o", mfc="white", color="grey",
                   label="qualifies, not kept"),
        plt.Line2D([], [], ls="", marker="x", color="grey", label="does not qualify"),
    ]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=3, frameon=False,
               bbox_to_anchor=(0.5, -0.12))
    fig.suptitle("Calibration candidates: direct SDF variants' alignment-faking signal vs. "
                 "the reference (Appendix C.1)", fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi)


def profile_plane(df: pl.DataFrame, display_names: Mapping[str, str],
                  outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Figure 5b: every model's comparative profile (S_A, S_B) per method on one plane.

    Marker shape per method, colour per model, CIs in both axes, an arrow from the prompt to the
    SDF profile where both exist. Points: ``profile_points`` (base model, standard strength,
    original naming preferred). Reads ``results/metrics/profiles.parquet``.
    """
    _require(df, ["model", "method", "quantity", "estimate", "ci_low", "ci_high"],
             "profile_plane")
    points = profile_points(df)
    points = points.filter(pl.any_horizontal([_notna(points, c) for c in
                                              ("S_A", "S_B", "S_A_low", "S_B_low")]))
    if points.is_empty():
        raise ValueError("profile_plane: no base-model S_A / S_B rows (quantity S_A or S_B "
                         "with a null checkpoint) in the input table")
    models = sorted(points["model"].unique().to_list())
    cmap = plt.get_cmap("tab10")
    colors = {m: cmap(i % 10) for i, m in enumerate(models)}
    limits = _plane_limits(points)
    fig, ax = plt.subplots(figsize=(6.2, 5.4))
    for model in models:
        p = {r["method"]: r for r in points.filter(pl.col("model") == model)
             .iter_rows(named=True)}
        for method, r in p.items():
            x, y = r["S_A"] * 100, r["S_B"] * 100
            xerr = _errs(np.array([x]), np.array([r["S_A_low"] * 100]),
                         np.array([r["S_A_high"] * 100]))
            yerr = _errs(np.array([y]), np.array([r["S_B_low"] * 100]),
                         np.array([r["S_B_high"] * 100]))
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=METHOD_MARKERS.get(method, "D"),
                        color=colors[model], ms=7, capsize=2, lw=1, alpha=0.9, zorder=3,
                        mfc=colors[model] if method != "steering" else "white")
        if {"prompt", "sdf"} <= set(p):
            a, b = p["prompt"], p["sdf"]
            start, end = (a["S_A"] * 100, a["S_B"] * 100), (b["S_A"] * 100, b["S_B"] * 100)
            if np.isfinite([*start, *end]).all() and start != end:
                ax.annotate("", xy=end, xytext=start, zorder=2,
                            arrowprops={"arrowstyle": "->", "color": colors[model],
                                        "lw": 1.2, "shrinkA": 4, "shrinkB": 5})
    _plane_axes(ax, limits, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colors[m],
                          label=display_names.get(m, m)) for m in models]
    present = set(points["method"].to_list())
    methods = [m for m in METHOD_ORDER if m in present]
    methods += sorted(present - set(METHOD_ORDER))
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


def prompt_strength_ablation(df: pl.DataFrame, display_names: Mapping[str, str],
                             outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Figure 9 (Appendix C.2): prompt S_A and S_B (lines, CI bands) vs. claim strength, with
    each intervention's effect on the gap (faint markers: amplify filled, suppress hollow).
    Reads ``results/metrics/{model}/prompt_effects.parquet``."""
    _require(df, ["model", "strength", "quantity", "target", "estimate", "ci_low", "ci_high"],
             "prompt_strength_ablation")
    d = df
    if "method" in d.columns:
        d = d.filter(_na(d, "method") | pl.col("method").eq_missing("prompt"))
    if "checkpoint" in d.columns:
        d = d.filter(_na(d, "checkpoint"))
    if "naming" in d.columns:
        d = d.filter(_na(d, "naming") | pl.col("naming").eq_missing("original"))
    models = sorted(d["model"].drop_nulls().unique().to_list())
    if not models:
        raise ValueError("prompt_strength_ablation: no base-model prompt rows in the input")
    fig, axes = plt.subplots(1, len(models), figsize=(4.4 * len(models), 3.8), squeeze=False,
                             sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        m = d.filter(pl.col("model") == model)
        strengths = [s for s in STRENGTH_ORDER if s in set(_valid(m["strength"].to_list()))]
        x = np.arange(len(strengths))
        deltas = m.filter(pl.col("quantity").eq_missing("delta_gap"))
        inters = [i for i in INTERVENTION_ORDER
                  if len(deltas.filter(pl.col("target").eq_missing(i)))]
        for k, inter in enumerate(inters):
            rows = _first_rows(deltas.filter(pl.col("target").eq_missing(inter)), "strength",
                               strengths, ["estimate"])
            color = FAMILY_COLORS[inter[0]]
            ax.plot(x + (k - 3.5) * 0.025, rows["estimate"] * 100,
                    ls="", marker="o" if inter[1] == "1" else "s", ms=4, alpha=0.45,
                    color=color, mfc=color if inter.endswith("amp") else "none", zorder=2)
        for q in PROFILE_QUANTITIES:
            rows = _first_rows(m.filter(pl.col("quantity").eq_missing(q)), "strength",
                               strengths, ["estimate", "ci_low", "ci_high"])
            if np.isnan(rows["estimate"]).all() and np.isnan(rows["ci_low"]).all():
                continue
            e = rows["estimate"] * 100
            lo = rows["ci_low"] * 100
            hi = rows["ci_high"] * 100
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
