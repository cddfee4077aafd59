"""Known-answer validation figure: each simulated organism's recovered quantities (estimate and
CI) against their planted values, one panel per quantity family, and the deterministic
outcomes (calibration selection, recovered flag, the steering layers) listed as matched or not,
and the fitted steering vectors' cosines with the planted directions against their bound."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from motivation_profiles.figures.style import _num, save

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

PANELS = (
    ("gap", ("gap",)),
    ("compliance per tier", ("monitored_compliance", "unmonitored_compliance")),
    ("Δgap", ("delta_gap",)),
    ("S_A, S_B", ("S_A", "S_B")),
    ("judge mean score", ("judge_mean_a", "judge_mean_b")),
    ("steering slope (per unit multiplier)", ("steering_slope", "random_control_slope",
                                              "random_control_cosine")),
)


def planted_recovery(table: pl.DataFrame, display_names: Mapping[str, str],
                     outputs: Sequence[str | Path], *, dpi: int = 150) -> None:
    """Estimate ± CI against planted value per quantity (covered: dark, not covered: red);
    y = x is perfect recovery."""
    if table.is_empty():
        raise ValueError("planted_recovery: the recovery table has no rows")
    models = table["model"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(len(models), len(PANELS) + 2,
                             figsize=(3.0 * (len(PANELS) + 2), 3.2 * len(models)),
                             squeeze=False)
    for row, model in zip(axes, models, strict=True):
        df = table.filter(pl.col("model") == model)
        name = display_names.get(model, model)
        for ax, (title, quantities) in zip(row, PANELS, strict=False):
            part = df.filter(pl.col("kind").eq("interval") & pl.col("quantity").is_in(quantities))
            ax.set_title(f"{title}", fontsize=9)
            if part.is_empty():
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", fontsize=8,
                        transform=ax.transAxes)
                continue
            planted, est = _num(part["planted"]), _num(part["estimate"])
            lo, hi = _num(part["ci_low"]), _num(part["ci_high"])
            covered = part["covered"].to_numpy()
            for mask, color, label in ((covered, "#1f4e79", "CI covers planted"),
                                       (~covered, "#c0392b", "CI misses planted")):
                if mask.any():
                    ax.errorbar(planted[mask], est[mask],
                                yerr=[est[mask] - lo[mask], hi[mask] - est[mask]], fmt="o",
                                ms=3, color=color, ecolor=color, elinewidth=0.8, lw=0,
                                label=label)
            span = np.nanmin([planted.min(), lo.min()]), np.nanmax([planted.max(), hi.max()])
            ax.plot(span, span, color="grey", lw=0.8, ls="--")
            ax.set_xlabel("planted", fontsize=8)
            ax.set_ylabel("estimate (95% CI)" if title == "gap" else "", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.text(0.02, 0.98, f"{int(covered.sum())}/{len(covered)} covered",
                    transform=ax.transAxes, va="top", fontsize=7)
        _bounds(row[-2], df.filter(pl.col("kind") == "bound"))
        ax = row[-1]
        ax.axis("off")
        iv = df.filter(pl.col("kind") == "interval")
        ex = df.filter(pl.col("kind").is_in(["exact", "decision"])
                       & (pl.col("quantity") != "selected_layer"))
        lines = [f"{name}", f"interval quantities: {iv.height}",
                 f"covered: {int(iv['covered'].sum())} ({100 * iv['covered'].mean():.0f}%)",
                 f"max |estimate - planted| / SE: {iv['z'].abs().max():.2f}", ""]
        layers = df.filter(pl.col("quantity") == "selected_layer")
        if layers.height:
            want = [r["target"] for r in layers.iter_rows(named=True) if r["planted"]]
            got = [r["target"] for r in layers.iter_rows(named=True) if r["estimate"]]
            lines.append(f"steering layers: planted {','.join(want)}, got {','.join(got)} "
                         f"{'ok' if layers['covered'].all() else 'MISMATCH'}")
        for r in ex.iter_rows(named=True):
            what = r["quantity"] + (f" {r['target']}" if r["target"] else "")
            miss = "MISMATCH" if r["kind"] == "exact" else "differs (sampling)"
            lines.append(f"{what}: planted {_bool(r['planted'])}, got {_bool(r['estimate'])}"
                         f" {'ok' if r['covered'] else miss}")
        ax.text(0.0, 1.0, "\n".join(lines), va="top", fontsize=7, family="monospace",
                transform=ax.transAxes)
        row[0].legend(fontsize=6, loc="lower right", frameon=False)
    fig.suptitle("Known-answer validation: planted vs recovered (simulated organisms)",
                 fontsize=10)
    fig.tight_layout()
    save(fig, outputs, dpi)


def _bounds(ax, rows: pl.DataFrame) -> None:
    """The bound rows (fitted vector x selected layer: cosine with the planted direction)
    against their planted bound."""
    ax.set_title("steering vector cosine (bound)", fontsize=9)
    if rows.is_empty():
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", fontsize=8,
                transform=ax.transAxes)
        return
    y = np.arange(rows.height)
    met = rows["covered"].to_numpy()
    est = _num(rows["estimate"])
    ax.scatter(est[met], y[met], s=12, color="#1f4e79", label="reaches bound")
    ax.scatter(est[~met], y[~met], s=12, color="#c0392b", label="below bound")
    for bound in sorted(set(_num(rows["planted"]).tolist())):
        ax.axvline(bound, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, rows["target"].to_list(), fontsize=6)
    ax.set_xlim(min(-0.05, float(np.nanmin(est)) - 0.05), 1.0)
    ax.set_xlabel("cosine with planted direction (noise metric)", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.text(0.02, 0.02, f"{int(met.sum())}/{len(met)} reach the bound",
            transform=ax.transAxes, fontsize=7)


def _bool(v: object) -> str:
    return "none" if v is None else str(bool(v))
