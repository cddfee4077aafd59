"""Figures drawn from activations: token heatmaps (Figures 11/12) and SDF-steering alignment."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from motivation_profiles.figures.steering import (
    ALIGNMENT_NEEDS,
    CONCEPT_LABELS,
    MAX_TOKENS,
    TOKEN_NEEDS,
    _axis_note,
    _by_layer,
    _level,
    _models,
    _n_text,
    _name,
    _vector_rank,
    _with_refs,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from motivation_profiles.figures.style import (  # noqa: E402
    FAMILY_COLORS,
    _groups,
    _notna,
    _null,
    _num,
    _require,
    _unique,
    norms_note,
    save,
)
from motivation_profiles.steering.names import (  # noqa: E402
    parse_vector,
    vector_name,
)

# ----------------------------------------------------------------------------- Figures 11 / 12


def _tick_text(token: object, width: int = 14) -> str:
    """A token as a tick label: byte-level BPE markers and control characters made visible,
    ``$`` escaped so mathtext never starts, long tokens cut."""
    s = "" if token is None or (isinstance(token, float) and np.isnan(token)) else str(token)
    s = s.replace("\u0120", " ").replace("\u010a", "\n")
    s = s.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if not s.strip():
        s = "\u00b7" * max(len(s), 1) if s else "''"
    if len(s) > width:
        s = s[: width - 1] + "\u2026"
    return s.replace("$", r"\$")


def _window(values: np.ndarray, fitted_rows: np.ndarray, size: int) -> int:
    """Start of the ``size``-token window with the largest mean |cosine| of the fitted
    vectors (all vectors when none is fitted); 0 when everything fits."""
    n = values.shape[1]
    if n <= size:
        return 0
    rows = values[fitted_rows] if fitted_rows.any() else values
    score = np.nan_to_num(np.abs(rows), nan=0.0).mean(axis=0)
    sums = np.convolve(score, np.ones(size), mode="valid")
    return int(np.argmax(sums))


def _transcript_order(values: Sequence[object]) -> list[object]:
    def key(v: object) -> tuple:
        if isinstance(v, (int, float, np.integer, np.floating)):
            return (0, float(v), "")
        return (1, 0.0, str(v))
    return sorted(_unique(values), key=key)


def _mean_cosines(g: pl.DataFrame, vectors: Sequence[str]) -> tuple[list[object], np.ndarray]:
    """The mean cosine per (vector, position), missing values skipped: the positions (sorted;
    rows without a position, and positions where every vector's mean is missing, left out) and
    a ``vectors`` x positions array (NaN where a vector has no value)."""
    agg = (g.filter(_notna(g, "position"))
           .group_by("vector", "position")
           .agg(pl.col("cosine").cast(pl.Float64, strict=False).fill_nan(None).mean())
           .drop_nulls("cosine"))
    means = {(v, p): c for v, p, c in agg.select("vector", "position", "cosine").iter_rows()}
    positions = sorted({p for _, p in means})
    wide = np.array([[means.get((v, p), np.nan) for p in positions] for v in vectors],
                    dtype=float).reshape(len(vectors), len(positions))
    return positions, wide


def _token_heatmap(df: pl.DataFrame, display_names: Mapping[str, str],
                   outputs: Sequence[str | Path], dpi: int, concept: str, figure: str,
                   max_tokens: int = MAX_TOKENS, norms: pl.DataFrame | None = None) -> None:
    what = f"token_heatmap_{concept}"
    _require(df, TOKEN_NEEDS, what)
    d = _with_refs(df)
    d = d.filter(pl.col("concept") == concept)
    if d.is_empty():
        raise ValueError(f"{what}: no {concept} vectors ({vector_name(concept, 'ooc')}, "
                         f"{vector_name(concept, 'ic')}, random_{concept}_…) in the token-"
                         "cosine table")
    blocks = []
    for model in _models(d):
        m = d.filter(pl.col("model") == model)
        for t in _transcript_order(m["transcript"].to_list()):
            g = m.filter(pl.col("transcript").eq_missing(t))
            vectors = sorted(_unique(g["vector"].to_list()), key=_vector_rank)
            positions, wide = _mean_cosines(g, vectors)
            first_token: dict[object, object] = {}
            for p, token in zip(g["position"].to_list(), g["token"].to_list(), strict=True):
                first_token.setdefault(p, token)
            fitted = np.array([parse_vector(v).kind == "fitted" for v in vectors], bool)
            start = _window(wide, fitted, max_tokens)
            positions = positions[start:start + max_tokens]
            wide = wide[:, start:start + max_tokens]
            blocks.append((model, t, vectors, (positions, wide),
                           [first_token.get(p) for p in positions], fitted,
                           len(_unique(v for v in g["position"].to_list() if not _null(v)))))
    vals = np.concatenate([b[3][1].ravel() for b in blocks])
    vmax = float(np.nanmax(np.abs(vals))) if np.isfinite(vals).any() else 1.0
    vmax = vmax or 1.0
    heights = [0.26 * len(b[2]) + 1.5 for b in blocks]
    width = max(6.0, 0.2 * max(b[3][1].shape[1] for b in blocks) + 3.5)
    fig, axes = plt.subplots(len(blocks), 1, figsize=(width, sum(heights) + 0.8),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, (model, t, vectors, (cols, wide), tokens, fitted, total) in zip(
            axes[:, 0], blocks, strict=True):
        im = ax.imshow(wide, aspect="auto", cmap="RdBu_r", vmin=-vmax,
                       vmax=vmax, interpolation="nearest")
        ax.set_yticks(np.arange(len(vectors)), vectors, fontsize=6)
        for label, is_fitted in zip(ax.get_yticklabels(), fitted, strict=True):
            label.set_color("black" if is_fitted else "dimgrey")
            label.set_fontweight("bold" if is_fitted else "normal")
        ax.set_xticks(np.arange(wide.shape[1]), [_tick_text(x) for x in tokens], rotation=90,
                      fontsize=6)
        span = f"tokens {cols[0]}\u2013{cols[-1]} of {total}" if cols else "no tokens"
        ax.set_title(f"{_name(display_names, model)} \u2014 transcript {t} ({span})",
                     fontsize=8, loc="left")
        bar = fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
        bar.ax.tick_params(labelsize=6)
        bar.set_label("cosine", fontsize=7)
    n_tr = len(blocks)
    fig.suptitle(f"{figure}: per-token cosine with the {CONCEPT_LABELS[concept]} vectors "
                 f"(fitted OOC / IC in bold, norm-matched random controls in grey; mean over "
                 f"the steering layers; colour centred at 0; {n_tr} transcript"
                 f"{'s' if n_tr != 1 else ''}, \u2264{max_tokens} tokens each, the window "
                 "with the largest |cosine|)", fontsize=9, wrap=True)
    fig.tight_layout()
    save(fig, outputs, dpi, note=norms_note(norms, dict(display_names)))


def token_heatmap_expectations(df: pl.DataFrame, display_names: Mapping[str, str],
                               outputs: Sequence[str | Path], *, dpi: int = 150,
                 norms: pl.DataFrame | None = None) -> None:
    """Figure 11: per transcript, the per-token cosine with every researcher-expectations
    vector (fitted OOC, fitted IC, their random controls). Reads ``token_cosines.parquet``."""
    _token_heatmap(df, display_names, outputs, dpi, "expectations", "Figure 11",
                   norms=norms)


def token_heatmap_consequences(df: pl.DataFrame, display_names: Mapping[str, str],
                               outputs: Sequence[str | Path], *, dpi: int = 150,
                 norms: pl.DataFrame | None = None) -> None:
    """Figure 12: as ``token_heatmap_expectations`` for the retraining-consequences vectors."""
    _token_heatmap(df, display_names, outputs, dpi, "consequences", "Figure 12",
                   norms=norms)


# ----------------------------------------------------------------------------- SDF alignment

_BRANCH = re.compile(r"([AB])([12])_(amp|sup)")


def _branch_style(branch: str, others: Sequence[str]) -> dict:
    m = _BRANCH.match(branch)
    if m:
        return {"color": FAMILY_COLORS[m.group(1)], "ls": "-" if m.group(3) == "amp" else "--",
                "marker": "o" if m.group(2) == "1" else "s"}
    cmap = plt.get_cmap("tab10")
    return {"color": cmap((list(others).index(branch) + 2) % 10), "ls": "-.", "marker": "^"}


def sdf_steering_alignment(df: pl.DataFrame, display_names: Mapping[str, str],
                           outputs: Sequence[str | Path], *, dpi: int = 150,
                 norms: pl.DataFrame | None = None) -> None:
    """Does SDF move activations along the steering direction? Per model a row of panels, one
    per fitted vector: the cosine between the mean activation difference (SDF branch minus the
    organism) and v_l, per layer and branch, with its bootstrap CI band, a zero line, and the
    vector's random controls (thin grey) where present. Reads ``sdf_alignment.parquet``."""
    _require(df, ALIGNMENT_NEEDS, "sdf_steering_alignment")
    d = _with_refs(df)
    fitted = d.filter(pl.col("kind") == "fitted")
    if fitted.is_empty():
        raise ValueError("sdf_steering_alignment: no fitted vectors ({concept}_{source}) in "
                         "the alignment table")
    models = _models(fitted)
    vectors = sorted(_unique(fitted["vector"].to_list()), key=_vector_rank)
    branch_of = [str(b) for b in d["branch"].to_list()]
    branches = sorted(set(branch_of))
    others = [b for b in branches if not _BRANCH.match(b)]
    fig, axes = plt.subplots(len(models), len(vectors),
                             figsize=(4.0 * len(vectors), 3.4 * len(models)), squeeze=False,
                             sharey=True)
    for i, model in enumerate(models):
        for j, vec in enumerate(vectors):
            ax = axes[i][j]
            g = d.filter(pl.col("model") == model, pl.col("vector") == vec)
            ax.axhline(0, color="black", lw=0.8)
            ax.spines[["top", "right"]].set_visible(False)
            ax.tick_params(labelsize=7)
            controls = d.filter(pl.col("model") == model, pl.col("kind") == "random",
                                pl.col("of") == vec)
            for _, rv in _groups(controls, ["vector", "branch"]):
                rv = _by_layer(rv)
                ax.plot(_num(rv["layer"]), _num(rv["cosine"]),
                        color="grey", lw=0.5, alpha=0.6, zorder=1)
            g_branch = np.array([str(b) for b in g["branch"].to_list()], dtype=object)
            for branch in branches:
                b = _by_layer(g.filter(pl.Series(g_branch == branch, dtype=pl.Boolean)))
                if b.is_empty():
                    continue
                st = _branch_style(branch, others)
                x = _num(b["layer"])
                ax.fill_between(x, _num(b["ci_low"]), _num(b["ci_high"]),
                                color=st["color"], alpha=0.15, lw=0)
                ax.plot(x, _num(b["cosine"]), color=st["color"], ls=st["ls"],
                        marker=st["marker"], ms=3, lw=1.2, zorder=3)
            ax.set_title(f"{_name(display_names, model)} \u2014 {vec}\n"
                         f"n_texts: {_n_text(g['n_texts']).removeprefix('n = ')}",
                         fontsize=8)
            if g.is_empty():
                _axis_note(ax, "no rows")
            if i == len(models) - 1:
                ax.set_xlabel("layer", fontsize=8)
        axes[i][0].set_ylabel("cos(mean \u0394 activation, v_l)", fontsize=8)
    handles = []
    for branch in branches:
        st = _branch_style(branch, others)
        handles.append(plt.Line2D([], [], color=st["color"], ls=st["ls"], marker=st["marker"],
                                  ms=3, label=branch))
    if "random" in set(d["kind"].to_list()):
        handles.append(plt.Line2D([], [], color="grey", lw=0.5, label="random controls"))
    fig.legend(handles=handles, fontsize=7, loc="lower center", ncol=min(len(handles), 6),
               frameon=False, bbox_to_anchor=(0.5, -0.12 / len(models)))
    fig.suptitle("Does SDF move activations along the steering direction? Cosine of the mean "
                 "activation difference (SDF branch \u2212 organism) with the vector, per layer "
                 f"(bootstrap {_level(d)} over texts)", fontsize=9, wrap=True)
    fig.tight_layout()
    save(fig, outputs, dpi, note=norms_note(norms, dict(display_names)))
