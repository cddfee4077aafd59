"""Shared figure style and helpers: tier colours and labels, intervention order, saving, and
the small table helpers the figure modules share (a missing value is a null, or a NaN in a
float column: figure inputs concatenate tables that may lack a column, and NaN and null are
drawn alike)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from motivation_profiles.core.io import atomic_path  # noqa: E402

TIER_LABELS = {"monitored": "monitored (free tier)", "unmonitored": "unmonitored (paid tier)"}


TIER_COLORS = {"monitored": "#c0392b", "unmonitored": "#2c7fb8"}


def norms_note(norms: pl.DataFrame | None, display_names: dict | None = None) -> str | None:
    """The caption line giving each fitted vector's norm at its steered layers (from
    ``results/vectors/{model}/norms.parquet``): multiplier x adds x * ||v_l|| at layer l, so
    multipliers compare across concepts only through these norms. None without a table."""
    if norms is None or norms.is_empty():
        return None
    fitted = norms.filter(pl.col("kind") == "fitted")
    if "steered" in fitted.columns and fitted["steered"].any():
        fitted = fitted.filter("steered")
        where = "steered layers"
    else:
        where = "every layer"
    parts = []
    for (model,), g in sorted(fitted.partition_by("model", as_dict=True).items()):
        name = (display_names or {}).get(model, model)
        vecs = []
        for (vector,), v in sorted(g.partition_by("vector", as_dict=True).items()):
            scale = v["scale"][0] if "scale" in v.columns else None
            layers = ", ".join(f"L{int(r['layer'])} {r['norm']:.3g}"
                               for r in v.sort("layer").iter_rows(named=True))
            vecs.append(f"{vector} [{layers}]" + (f" ({scale})" if scale else ""))
        parts.append(f"{name}: " + "; ".join(vecs))
    return (f"Vector norms ||v_l|| at the {where} (multiplier 1 adds this much; random controls "
            "are norm-matched to their vector; all layers: results/vectors/{model}/norms.parquet)"
            "\n" + "\n".join(parts))


def save(fig, outputs: Sequence[str | Path], dpi: int, *, note: str | None = None) -> None:
    """Save one figure to each output path (format from the suffix), atomically; ``note`` is
    printed under the figure (a caption line, e.g. :func:`norms_note`)."""
    if note:
        fig.text(0.5, -0.01, note, ha="center", va="top", fontsize=6, color="dimgrey",
                 wrap=True)
    for out in outputs:
        out = Path(out)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=out.suffix.lstrip("."), dpi=dpi, bbox_inches="tight",
                        metadata={"Creator": "motivation-profiles"} if out.suffix == ".pdf"
                        else None)
    plt.close(fig)


# ----------------------------------------------------------------------------- SDF

INTERVENTION_ORDER = ["A1_amp", "A1_sup", "A2_amp", "A2_sup",
                      "B1_amp", "B1_sup", "B2_amp", "B2_sup"]


FAMILY_COLORS = {"A": "#7b3294", "B": "#e08214"}


STRENGTH_ORDER = ["weak", "standard", "strong"]


def _label(intervention: str) -> str:
    return intervention.replace("_amp", "+").replace("_sup", "\u2212")


def _require(df: pl.DataFrame | None, columns: Sequence[str], what: str) -> None:
    """ValueError when ``df`` is empty or lacks one of ``columns`` (named in the message)."""
    if df is None or len(df) == 0:
        raise ValueError(f"{what}: the input table is empty")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the input table lacks column(s) {', '.join(missing)} "
                         f"(has {', '.join(map(str, df.columns))})")


def _null(value: object) -> bool:
    """A missing cell: None or a float NaN (lists, arrays and other values are not)."""
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return False


def _float(value: object) -> float:
    """``float(value)``, NaN for a null cell."""
    return math.nan if value is None else float(value)


def _na(df: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` is missing: null, or NaN in a float column."""
    col = pl.col(column)
    return (col.is_null() | col.is_nan()) if df.schema[column].is_float() else col.is_null()


def _notna(df: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` holds a value: neither null nor NaN."""
    return ~_na(df, column)


def _num(values: pl.Series) -> np.ndarray:
    """A column as a float array, NaN where it is null or not a number (a string that does
    not parse, say)."""
    return np.asarray(values.cast(pl.Float64, strict=False).to_numpy(), dtype=float)


def _valid(values: Iterable[object]) -> list[object]:
    """The values that are not missing (see ``_null``), in order."""
    return [v for v in values if not _null(v)]


def _unique(values: Iterable[object]) -> list[object]:
    """The distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def _first_rows(df: pl.DataFrame, key: str, keys: Sequence[object],
                columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Per column, a float array with the value of the first row of each of ``keys`` (NaN
    for a key without a row)."""
    first: dict[object, int] = {}
    for i, k in enumerate(df[key].to_list()):
        first.setdefault(k, i)
    rows = [first.get(k) for k in keys]
    out = {}
    for c in columns:
        values = _num(df[c])
        out[c] = np.array([math.nan if i is None else values[i] for i in rows], dtype=float)
    return out


def _groups(df: pl.DataFrame, keys: Sequence[str], *,
            dropna: bool = True) -> list[tuple[tuple, pl.DataFrame]]:
    """``(key, rows)`` per distinct ``keys`` tuple, keys sorted, rows in table order; a key
    with a missing value is left out, or with ``dropna=False`` kept (as None, sorted last)."""
    index: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(*(df[k].to_list() for k in keys), strict=True)):
        key = tuple(None if _null(v) else v for v in key)
        if dropna and None in key:
            continue
        index.setdefault(key, []).append(i)
    order = sorted(index, key=lambda key: tuple((v is None, v) for v in key))
    return [(key, df[index[key], :]) for key in order]
