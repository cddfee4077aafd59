"""Activation-steering figures (paper Figures 4, 10-14 and the SDF / steering alignment check),
drawn from the steering tables alone (no model, no GPU, no API).

Every figure function has the signature ``draw(df, display_names, outputs, *, dpi)``: ``df`` is
the concatenation of all its input tables (one per model), one row of panels (or one block of
rows) per model, titled with the model's display name; an empty input or one lacking a needed
column raises ValueError naming it. Inputs:

* ``steering_ooc`` / ``steering_ic`` / ``steering_random``: ``results/steering/{model}/
  summary.parquet`` (``metrics.steering.steering_summary``);
* ``steering_raw``: ``results/steering/{model}/raw.parquet`` (``raw_summary``);
* ``token_heatmap_expectations`` / ``token_heatmap_consequences``: ``results/steering/{model}/
  token_cosines.parquet``;
* ``sdf_steering_alignment``: ``results/steering/{model}/sdf_alignment.parquet``;
* ``steering_diagnostics``: ``results/vectors/{model}/**.diagnostics.parquet``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from motivation_profiles.figures.style import (  # noqa: E402
    FAMILY_COLORS,
    TIER_COLORS,
    TIER_LABELS,
    _float,
    _groups,
    _na,
    _notna,
    _null,
    _num,
    _require,
    _unique,
    norms_note,
    save,
)
from motivation_profiles.rollouts.protocol import TIERS  # noqa: E402
from motivation_profiles.steering.names import (  # noqa: E402
    CONCEPT_DIRECTION,
    CONCEPTS,
    SOURCES,
    format_multiplier,
    parse_vector,
    vector_name,
)

CONCEPT_LABELS = {"expectations": "researcher expectations",
                  "consequences": "retraining consequences"}


CONCEPT_COLORS = {c: FAMILY_COLORS[CONCEPT_DIRECTION[c].upper()] for c in CONCEPTS}


SOURCE_LABELS = {"ooc": "out-of-context (OOC)", "ic": "in-context (IC)"}


SUMMARY_NEEDS = ["model", "vector", "multiplier", "condition", "tier", "compliance", "ci_low",
                 "ci_high", "n"]


JUDGE_NEEDS = ["judged", "a_share", "b_share"]


TOKEN_NEEDS = ["model", "transcript", "position", "token", "vector", "cosine"]


RAW_NEEDS = ["model", "condition", "vector", "multiplier", "n", "judged", "complied", "ci_low",
             "ci_high"]


ALIGNMENT_NEEDS = ["model", "branch", "vector", "layer", "cosine", "ci_low", "ci_high",
                   "n_texts"]


MAX_TOKENS = 64


# ----------------------------------------------------------------------------- helpers


def _name(display_names: Mapping[str, str], model: str) -> str:
    return display_names.get(model, model)


def _level(df: pl.DataFrame) -> str:
    """``95% CIs`` from the table's ``ci_level`` column, else ``CIs``."""
    if "ci_level" in df.columns:
        level = _dropna(_num(df["ci_level"]))
        if len(level):
            return f"{int(round(float(level[0]) * 100))}% CIs"
    return "CIs"


def _dropna(values: np.ndarray) -> np.ndarray:
    """The values that are not NaN."""
    return values[~np.isnan(values)]


def _fill0(values: np.ndarray) -> np.ndarray:
    """NaN replaced by 0."""
    return np.where(np.isnan(values), 0.0, values)


def _models(df: pl.DataFrame) -> list[str]:
    """The table's models as strings, sorted (one row of panels each)."""
    return sorted(df["model"].drop_nulls().cast(pl.String).unique().to_list())


def _errs(est: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lower = np.nan_to_num(np.clip(est - lo, 0, None), nan=0.0)
    upper = np.nan_to_num(np.clip(hi - est, 0, None), nan=0.0)
    return np.vstack([lower, upper])


def _ref(name: object):
    """The parsed vector name, or None for a name that is not a vector (skipped)."""
    try:
        return parse_vector(str(name))
    except ValueError:
        return None


def _vector_rank(name: str) -> tuple:
    ref = parse_vector(name)
    return (CONCEPTS.index(ref.concept), ref.kind != "fitted", SOURCES.index(ref.source),
            ref.k or 0)


def _with_refs(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with ``concept``, ``source``, ``kind``, ``of`` and ``_k`` re-derived from
    ``vector`` (rows whose vector does not parse are dropped)."""
    refs = [_ref(v) for v in df["vector"].to_list()]
    keep = pl.Series([r is not None for r in refs], dtype=pl.Boolean)
    refs = [r for r in refs if r is not None]
    return df.filter(keep).with_columns(
        pl.Series("concept", [r.concept for r in refs], dtype=pl.String),
        pl.Series("source", [r.source for r in refs], dtype=pl.String),
        pl.Series("kind", [r.kind for r in refs], dtype=pl.String),
        pl.Series("of", [r.of for r in refs], dtype=pl.String),
        pl.Series("_k", [r.k or 0 for r in refs], dtype=pl.Int64))


def _mult_ticks(ax, multipliers: np.ndarray) -> None:
    ms = sorted({float(m) for m in multipliers if np.isfinite(m)})
    if ms:
        ax.set_xticks(ms, ["0\n(base)" if m == 0 else format_multiplier(m) for m in ms],
                      fontsize=7)
        span = max(ms) - min(ms) or 1.0
        ax.set_xlim(min(ms) - 0.12 * span, max(ms) + 0.12 * span)


def _n_text(n: pl.Series) -> str:
    v = _dropna(_num(n)).astype(int)
    if len(v) == 0:
        return "n = ?"
    return f"n = {v.min()}" if v.min() == v.max() else f"n = {v.min()}\u2013{v.max()}"


def _by_multiplier(df: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted by ``multiplier`` (stable, missing last)."""
    return df.sort("multiplier", nulls_last=True, maintain_order=True)


def _tier_curves(ax, g: pl.DataFrame, *, lw: float = 1.4, band: bool = True) -> None:
    """Compliance (%) vs multiplier per tier, CI error bars and band, baseline starred."""
    for tier in TIERS:
        t = _by_multiplier(g.filter(pl.col("tier") == tier))
        if t.is_empty():
            continue
        x = _num(t["multiplier"])
        y = _num(t["compliance"]) * 100
        lo = _num(t["ci_low"]) * 100
        hi = _num(t["ci_high"]) * 100
        color = TIER_COLORS[tier]
        if band:
            ax.fill_between(x, lo, hi, color=color, alpha=0.12, lw=0)
        ax.errorbar(x, y, yerr=_errs(y, lo, hi), color=color, lw=lw, marker="o", ms=4,
                    capsize=2, zorder=3)
        base = t.filter(pl.col("condition") == "baseline")
        if len(base):
            ax.plot(_num(base["multiplier"]),
                    _num(base["compliance"]) * 100, marker="*", ms=11, ls="",
                    color=color, mec="black", mew=0.6, zorder=4)


def _pooled(g: pl.DataFrame, d: str) -> float:
    """Tier-pooled share of high scores: tier shares weighted by their scored counts
    (``{d}_scored``, else ``judged``)."""
    share = _num(g[f"{d}_share"])
    wcol = f"{d}_scored" if f"{d}_scored" in g.columns else "judged"
    w = _fill0(_num(g[wcol]))
    ok = np.isfinite(share) & (w > 0)
    if not ok.any():
        return np.nan
    return float((share[ok] * w[ok]).sum() / w[ok].sum())


def _by_layer(df: pl.DataFrame) -> pl.DataFrame:
    """Rows sorted by ``layer`` (stable, missing last)."""
    return df.sort("layer", nulls_last=True, maintain_order=True)


def _max_per(df: pl.DataFrame, key: str, column: str) -> dict[object, float]:
    """Per ``key`` value (sorted; rows with a missing key left out), the largest non-missing
    ``column`` value; keys whose values are all missing are left out."""
    out = {}
    for (k,), g in _groups(df, [key]):
        values = _dropna(_num(g[column]))
        if len(values):
            out[k] = float(values.max())
    return out


def _axis_note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8,
            color="grey")


# ----------------------------------------------------------------------------- Figures 4 / 13


def _steering_source(df: pl.DataFrame, display_names: Mapping[str, str],
                     outputs: Sequence[str | Path], dpi: int, source: str,
                     figure: str, norms: pl.DataFrame | None = None) -> None:
    what = f"steering_{source}"
    _require(df, SUMMARY_NEEDS + JUDGE_NEEDS, what)
    d = _with_refs(df)
    d = d.filter(pl.col("source") == source, pl.col("kind") == "fitted")
    if d.is_empty():
        names = ", ".join(vector_name(c, source) for c in CONCEPTS)
        raise ValueError(f"{what}: no fitted {source} vectors ({names}) in the steering "
                         "summary")
    models = _models(d)
    concepts = [c for c in CONCEPTS if c in set(d["concept"].to_list())]
    highs = _dropna(_num(d["high"])) if "high" in d.columns else []
    high = f"{float(highs[0]):g}" if len(highs) else "high"
    fig = plt.figure(figsize=(4.6 * len(concepts), 5.6 * len(models) + 0.6),
                     layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(models), 1))
    for model, sub in zip(models, subfigs, strict=True):
        axes = sub.subplots(2, len(concepts), squeeze=False, sharex="col",
                            gridspec_kw={"height_ratios": [3, 2]})
        for j, concept in enumerate(concepts):
            ax, bx = axes[0][j], axes[1][j]
            vec = vector_name(concept, source)
            g = d.filter(pl.col("model") == model, pl.col("vector") == vec)
            ax.set_title(f"{_name(display_names, model)} \u2014 {vec}\n"
                         f"{CONCEPT_LABELS[concept]}; {_n_text(g['n'])} rollouts per tier "
                         "and point", fontsize=8)
            for a in (ax, bx):
                a.axvline(0, color="grey", lw=0.8, ls=":", zorder=0)
                a.spines[["top", "right"]].set_visible(False)
                a.tick_params(labelsize=7)
            if g.is_empty():
                _axis_note(ax, f"{vec} not steered for this model")
                _axis_note(bx, "no judge decomposition")
                continue
            _tier_curves(ax, g)
            ax.set_ylim(-3, 103)
            ax.set_ylabel("compliance (%)", fontsize=8)
            _mult_ticks(ax, _num(g["multiplier"]))
            ax.tick_params(axis="x", labelbottom=False)
            # bottom: judge decomposition, pooled over tiers
            per_m = []
            for (m,), gm in _groups(g, ["multiplier"]):
                per_m.append((float(m), _pooled(gm, "a"), _pooled(gm, "b"),
                              int(_fill0(_num(gm["judged"])).sum())))
            x = np.array([p[0] for p in per_m])
            for k, c in enumerate(("expectations", "consequences")):
                y = np.array([p[1 + k] for p in per_m]) * 100
                bx.plot(x, y, color=CONCEPT_COLORS[c], marker="o" if k == 0 else "s", ms=4,
                        lw=1.4, zorder=3)
            for m, _, _, judged in per_m:
                bx.annotate(f"n={judged}", (m, 0.02), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=6, color="dimgrey")
            if not any(np.isfinite(p[1]) or np.isfinite(p[2]) for p in per_m):
                _axis_note(bx, "no parseable judge scores")
            bx.set_ylim(-12, 103)
            bx.set_ylabel(f"scratchpads scored \u2265 {high} (%)", fontsize=8)
            bx.set_xlabel("steering multiplier (signed; 0 = unsteered baseline)", fontsize=8)
            _mult_ticks(bx, _num(g["multiplier"]))
    handles = [plt.Line2D([], [], color=TIER_COLORS[t], marker="o", label=TIER_LABELS[t])
               for t in TIERS]
    handles += [
        plt.Line2D([], [], ls="", marker="*", ms=10, color="grey", mec="black",
                   label="multiplier 0 = unsteered baseline"),
        plt.Line2D([], [], color=CONCEPT_COLORS["expectations"], marker="o",
                   label="judge A (researcher expectations), pooled over tiers"),
        plt.Line2D([], [], color=CONCEPT_COLORS["consequences"], marker="s",
                   label="judge B (retraining consequences), pooled over tiers"),
        plt.Line2D([], [], ls="", marker="$n$", color="dimgrey",
                   label="n = judged scratchpads (both tiers)"),
    ]
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncol=3, frameon=False)
    fig.suptitle(f"{figure}: {SOURCE_LABELS[source]} steering \u2014 compliance (Wilson "
                 f"{_level(d)}) and judge decomposition vs. signed multiplier", fontsize=10)
    save(fig, outputs, dpi, note=norms_note(norms, dict(display_names)))


def steering_ooc(df: pl.DataFrame, display_names: Mapping[str, str],
                 outputs: Sequence[str | Path], *, dpi: int = 150,
                 norms: pl.DataFrame | None = None) -> None:
    """Figure 4: per fitted OOC vector (columns), compliance per tier vs. the signed multiplier
    (top; Wilson CIs as bars and band; multiplier 0 = the unsteered baseline, starred) and the
    tier-pooled share of scratchpads the judge scores >= ``high`` on researcher expectations (A)
    and retraining consequences (B) (bottom; the number of judged scratchpads along the axis).
    Reads ``results/steering/{model}/summary.parquet``."""
    _steering_source(df, display_names, outputs, dpi, "ooc", "Figure 4", norms)


def steering_ic(df: pl.DataFrame, display_names: Mapping[str, str],
                outputs: Sequence[str | Path], *, dpi: int = 150,
                 norms: pl.DataFrame | None = None) -> None:
    """Figure 13: as ``steering_ooc`` for the in-context (IC) vectors fit on AF traces."""
    _steering_source(df, display_names, outputs, dpi, "ic", "Figure 13", norms)


# ----------------------------------------------------------------------------- Figure 10


def steering_random(df: pl.DataFrame, display_names: Mapping[str, str],
                    outputs: Sequence[str | Path], *, dpi: int = 150,
                 norms: pl.DataFrame | None = None) -> None:
    """Figure 10: per (fitted vector, tier) panel, compliance vs. multiplier of every
    norm-matched random control (thin grey), the fitted vector it controls for (coloured, with
    Wilson CIs) and the unsteered baseline (star, dashed level); the random range at each
    non-zero multiplier is written in the panel. Reads the steering summaries."""
    _require(df, SUMMARY_NEEDS, "steering_random")
    d = _with_refs(df)
    rnd = d.filter(pl.col("kind") == "random")
    if rnd.is_empty():
        raise ValueError("steering_random: no random-control rows (kind random, vectors "
                         "random_{concept}_{source}_{k}) in the steering summary")
    models = _models(rnd)
    ofs = sorted(_unique(rnd["of"].to_list()), key=_vector_rank)
    panels = [(of, tier) for of in ofs for tier in TIERS]
    fig, axes = plt.subplots(len(models), len(panels),
                             figsize=(3.2 * len(panels), 3.6 * len(models)), squeeze=False,
                             sharey=True)
    for i, model in enumerate(models):
        m = d.filter(pl.col("model") == model)
        for j, (of, tier) in enumerate(panels):
            ax = axes[i][j]
            ax.axvline(0, color="grey", lw=0.8, ls=":", zorder=0)
            ax.spines[["top", "right"]].set_visible(False)
            ax.tick_params(labelsize=7)
            g = m.filter(pl.col("of") == of, pl.col("tier") == tier)
            r = g.filter(pl.col("kind") == "random")
            k = r["vector"].drop_nulls().n_unique()
            ax.set_title(f"{_name(display_names, model)} \u2014 {of}\n{TIER_LABELS[tier]}; "
                         f"{k} random controls, {_n_text(g['n'])}", fontsize=7)
            if g.is_empty():
                _axis_note(ax, "not run")
                continue
            for _, rv in _groups(r, ["vector"]):
                rv = _by_multiplier(rv)
                ax.plot(_num(rv["multiplier"]),
                        _num(rv["compliance"]) * 100, color="grey", lw=0.7,
                        alpha=0.7, marker=".", ms=3, zorder=2)
            real = g.filter(pl.col("kind") == "fitted")
            _tier_curves(ax, real, lw=2.0, band=False)
            base = g.filter(pl.col("condition") == "baseline")
            if len(base):
                b = _float(base["compliance"][0]) * 100
                ax.axhline(b, color="black", lw=0.7, ls="--", zorder=1)
                if real.is_empty():
                    ax.plot([0.0], [b], marker="*", ms=11, ls="", color=TIER_COLORS[tier],
                            mec="black", mew=0.6, zorder=4)
            lines = []
            for (mult,), rm in _groups(r.filter(pl.col("multiplier").ne_missing(0)),
                                       ["multiplier"]):
                v = _num(rm["compliance"]) * 100
                if np.isfinite(v).any():
                    lines.append(f"random x{format_multiplier(mult)}: "
                                 f"{np.nanmin(v):.1f}\u2013{np.nanmax(v):.1f}%")
            if lines:
                ax.text(0.02, 0.98, "\n".join(lines[:4]), transform=ax.transAxes, ha="left",
                        va="top", fontsize=6, color="dimgrey")
            ax.set_ylim(-3, 103)
            _mult_ticks(ax, _num(g["multiplier"]))
            if i == len(models) - 1:
                ax.set_xlabel("steering multiplier", fontsize=8)
        axes[i][0].set_ylabel("compliance (%)", fontsize=8)
    handles = [plt.Line2D([], [], color=TIER_COLORS[t], lw=2, marker="o",
                          label=f"fitted vector, {TIER_LABELS[t]}") for t in TIERS]
    handles += [plt.Line2D([], [], color="grey", lw=0.7, marker=".",
                           label="norm-matched random controls"),
                plt.Line2D([], [], color="black", lw=0.7, ls="--", marker="*", mfc="grey",
                           label="unsteered baseline")]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=4, frameon=False,
               bbox_to_anchor=(0.5, -0.08 / len(models)))
    fig.suptitle("Figure 10: random-vector controls vs. the fitted steering vectors "
                 f"(Wilson {_level(d)} on the fitted vector)", fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi, note=norms_note(norms, dict(display_names)))


# ----------------------------------------------------------------------------- Figure 14


def steering_raw(df: pl.DataFrame, display_names: Mapping[str, str],
                 outputs: Sequence[str | Path], *, dpi: int = 150,
                 norms: pl.DataFrame | None = None) -> None:
    """Figure 14: raw-AdvBench compliance (compliance judge) per raw condition, baseline first,
    then each vector by multiplier; Wilson CIs, complied / judged above each bar, the baseline
    level dashed. Reads ``results/steering/{model}/raw.parquet``."""
    _require(df, RAW_NEEDS, "steering_raw")
    base = df.filter(_na(df, "vector"))
    vec = _with_refs(df.filter(_notna(df, "vector")))
    ranks = [(-1, 0, 0, 0)] * len(base) + [_vector_rank(v) for v in vec["vector"].to_list()]
    d = pl.concat([base, vec], how="diagonal_relaxed").with_columns(
        pl.Series("_rank", [[int(v) for v in r] for r in ranks], dtype=pl.List(pl.Int64)))
    if d.is_empty():
        raise ValueError("steering_raw: no raw-baseline or raw-{vector} rows in the input")
    models = _models(d)
    per_model = Counter(v for v in d["model"].to_list() if not _null(v))
    fig, axes = plt.subplots(len(models), 1, squeeze=False,
                             figsize=(max(5.0, 0.75 * max(per_model.values()) + 2.5),
                                      3.6 * len(models)))
    for ax, model in zip(axes[:, 0], models, strict=True):
        m = d.filter(pl.col("model") == model)
        keys = [(*r, _float(x)) for r, x in zip(m["_rank"].to_list(), m["multiplier"].to_list(),
                                                strict=True)]
        m = m[sorted(range(len(m)), key=keys.__getitem__), :]  # stable, as mergesort
        x = np.arange(len(m))
        y = _num(m["complied"]) * 100
        lo = _num(m["ci_low"]) * 100
        hi = _num(m["ci_high"]) * 100
        labels, colors, hatches = [], [], []
        rows = list(m.iter_rows(named=True))
        for r in rows:
            if _null(r["vector"]):
                labels.append("baseline")
                colors.append("grey")
                hatches.append(None)
            else:
                labels.append(f"{r['vector']}\nx{format_multiplier(r['multiplier'])}")
                colors.append(CONCEPT_COLORS[r["concept"]] if r["kind"] == "fitted"
                              else "lightgrey")
                hatches.append("///" if r["source"] == "ic" else None)
        for xi, yi, c, h in zip(x, y, colors, hatches, strict=True):
            ax.bar(xi, np.nan_to_num(yi), 0.62, color=c if h is None else "white",
                   edgecolor=c, hatch=h, lw=1.2)
        ax.errorbar(x, np.nan_to_num(y), yerr=_errs(y, lo, hi), fmt="none", ecolor="black",
                    capsize=3, lw=1)
        top = np.nanmax(np.concatenate([hi, y, [0.0]])) if len(m) else 0.0
        for xi, r, yi, hii in zip(x, rows, y, hi, strict=True):
            judged = int(r["judged"])
            k = int(round(yi / 100 * judged)) if np.isfinite(yi) else 0
            text = f"{k}/{judged}" if judged else "no verdicts"
            missing = r.get("unparsed", 0)
            if not _null(missing) and int(missing):
                text += f"\n(+{int(missing)} no verdict)"
            ax.annotate(text, (xi, np.nanmax([hii, yi, 0.0])), xytext=(0, 3),
                        textcoords="offset points", ha="center", va="bottom", fontsize=6)
        b = m.filter(_na(m, "vector"))
        if len(b) and np.isfinite(_float(b["complied"][0])):
            ax.axhline(_float(b["complied"][0]) * 100, color="black", lw=0.7, ls="--",
                       zorder=0)
        ax.set_xticks(x, labels, fontsize=6)
        ax.set_ylim(0, min(105.0, max(5.0, 1.3 * top + 2)))
        ax.set_ylabel("compliance, raw AdvBench (%)", fontsize=8)
        ax.set_title(f"{_name(display_names, model)}   ({_n_text(m['n'])} prompts per "
                     "condition; complied / judged above each bar)", fontsize=8, loc="left")
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(axis="y", labelsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color="grey", label="unsteered (raw-baseline)")]
    handles += [plt.Rectangle((0, 0), 1, 1, color=CONCEPT_COLORS[c], label=CONCEPT_LABELS[c])
                for c in CONCEPTS]
    handles += [plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="grey", hatch="///",
                              label="IC vector (solid: OOC)"),
                plt.Rectangle((0, 0), 1, 1, color="lightgrey", label="random control")]
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=5, frameon=False,
               bbox_to_anchor=(0.5, -0.08 / len(models)))
    fig.suptitle("Figure 14: raw AdvBench without the alignment-faking setup \u2014 compliance "
                 f"per steering condition (Wilson {_level(d)})", fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi, note=norms_note(norms, dict(display_names)))


def steering_diagnostics(df: pl.DataFrame, display_names: Mapping[str, str],
                         outputs: Sequence[str | Path], *, dpi: int = 150,
                 norms: pl.DataFrame | None = None) -> None:
    """Per-layer diagnostics of every fitted vector and its random controls: AUROC per split
    (grouped CV and each validation split) and paired accuracy, with the selected layers
    marked. Input: the ``*.diagnostics.parquet`` tables (columns model, vector, layer, split,
    auroc, paired_accuracy)."""
    need = ["model", "vector", "layer", "split", "auroc", "paired_accuracy"]
    missing = [c for c in need if c not in df.columns]
    if df.is_empty() or missing:
        raise ValueError(f"steering_diagnostics needs diagnostics tables with {need}; "
                         f"missing {missing or 'rows'}")
    models = sorted(df["model"].unique().to_list())
    fitted = sorted(v for v in df["vector"].unique().to_list()
                    if not str(v).startswith("random_"))
    fig, axes = plt.subplots(len(models) * 2, len(fitted),
                             figsize=(3.4 * len(fitted), 5.0 * len(models)), squeeze=False,
                             sharex=True)
    split_style = {"cv": "-", "validation": "--", "keyword_hard": ":"}
    for i, model in enumerate(models):
        mdf = df.filter(pl.col("model") == model)
        for j, vec in enumerate(fitted):
            for row, metric in enumerate(("auroc", "paired_accuracy")):
                ax = axes[2 * i + row, j]
                real = mdf.filter(pl.col("vector") == vec)
                for (split,), sdf in _groups(real, ["split"]):
                    sdf = _by_layer(sdf)
                    ax.plot(sdf["layer"].to_numpy(), sdf[metric].to_numpy(),
                            split_style.get(split, "-."),
                            color="#2c7fb8", lw=1.4, label=f"fitted, {split}")
                controls = mdf.filter(pl.col("vector").cast(pl.String)
                                      .str.starts_with(f"random_{vec}_"))
                for k, (_name, cdf) in enumerate(_groups(controls, ["vector"])):
                    for (split,), sdf in _groups(cdf, ["split"]):
                        sdf = _by_layer(sdf)
                        ax.plot(sdf["layer"].to_numpy(), sdf[metric].to_numpy(),
                                split_style.get(split, "-."),
                                color="0.6", lw=0.8,
                                label="random controls" if k == 0 and split == "validation"
                                else None)
                ax.axhline(0.5, color="black", lw=0.6, ls=":")
                ax.set_ylim(0, 1.02)
                ax.set_ylabel(metric.replace("_", " "))
                if row == 0:
                    n = _max_per(real, "split", "n_pairs") if "n_pairs" in real.columns else {}
                    counts = ", ".join(f"{s} {int(v)}" for s, v in n.items())
                    ax.set_title(f"{display_names.get(model, model)}: {vec}\npairs: {counts}",
                                 fontsize=8)
                else:
                    ax.set_xlabel("layer")
                if i == 0 and j == 0 and row == 0:
                    ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("Steering-vector diagnostics per layer (layers are chosen from these only)",
                 fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi, note=norms_note(norms, dict(display_names)))
