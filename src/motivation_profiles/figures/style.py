"""Shared figure style and helpers: tier colours and labels, intervention order, saving."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from motivation_profiles.core.io import atomic_path  # noqa: E402

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


# ----------------------------------------------------------------------------- SDF

INTERVENTION_ORDER = ["A1_amp", "A1_sup", "A2_amp", "A2_sup",
                      "B1_amp", "B1_sup", "B2_amp", "B2_sup"]


FAMILY_COLORS = {"A": "#7b3294", "B": "#e08214"}


STRENGTH_ORDER = ["weak", "standard", "strong"]


def _label(intervention: str) -> str:
    return intervention.replace("_amp", "+").replace("_sup", "\u2212")


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
