"""Figure 3 (figures/sdf.py): a lower row with each SDF condition's truncated and unparseable
rates per tier, from the conditions' metrics tables."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from motivation_profiles.figures import sdf as sdf_figures


def _effects() -> pl.DataFrame:
    rows = []
    for target in ("A1_amp", "A1_sup", "B1_amp", "B1_sup"):
        for q in ("delta_gap", "delta_monitored", "delta_unmonitored"):
            rows.append({"model": "m", "method": "sdf", "strength": "standard",
                         "naming": "original", "quantity": q, "target": target,
                         "estimate": 0.1, "ci_low": 0.0, "ci_high": 0.2, "ci_level": 0.95})
    return pl.DataFrame(rows)


def _rates() -> pl.DataFrame:
    rows = []
    for i, cond in enumerate(["sdf-noise", "sdf-A1_amp", "sdf-A1_sup", "sdf-B1_amp",
                              "sdf-B1_sup"]):
        rows.append({"model": "m", "condition": cond,
                     "monitored_truncated": 0.1 * i, "monitored_unparseable": 0.05,
                     "unmonitored_truncated": 0.02 * i, "unmonitored_unparseable": 0.0})
    return pl.DataFrame(rows)


def _figure(monkeypatch, tmp_path, **kw):
    figures = []
    monkeypatch.setattr(sdf_figures, "save", lambda fig, *a, **k: figures.append(fig))
    sdf_figures.sdf_profile(_effects(), {"m": "M"}, [tmp_path / "f.png"], **kw)
    return figures[0]


def test_figure_3_lower_row_stacks_truncated_and_unparseable_per_tier(monkeypatch, tmp_path):
    fig = _figure(monkeypatch, tmp_path, rates=_rates())
    assert len(fig.axes) == 2
    lower = fig.axes[1]
    assert [t.get_text() for t in lower.get_xticklabels()][:2] == ["noise", "A1+"]
    bars = lower.patches
    # 4 series (monitored truncated, monitored unparseable, unmonitored ...) x 5 conditions
    assert len(bars) == 20
    heights = np.array([b.get_height() for b in bars]).reshape(4, 5)
    np.testing.assert_allclose(heights[0], [0, 10, 20, 30, 40])      # monitored truncated
    np.testing.assert_allclose(heights[1], [5] * 5)                  # monitored unparseable
    np.testing.assert_allclose(heights[2], [0, 2, 4, 6, 8])          # unmonitored truncated
    bottoms = np.array([b.get_y() for b in bars]).reshape(4, 5)
    np.testing.assert_allclose(bottoms[1], heights[0])               # stacked
    assert lower.get_ylabel().startswith("no parsed answer")


def test_figure_3_without_rates_is_one_row(monkeypatch, tmp_path):
    assert len(_figure(monkeypatch, tmp_path).axes) == 1
    assert len(_figure(monkeypatch, tmp_path, rates=None).axes) == 1


def test_figure_3_saves_with_rates(tmp_path):
    sdf_figures.sdf_profile(_effects(), {"m": "M"}, [tmp_path / "f.png"], rates=_rates())
    assert (tmp_path / "f.png").stat().st_size > 0
    with pytest.raises(ValueError, match="standard-strength"):
        sdf_figures.sdf_profile(_effects().clear(), {}, [tmp_path / "g.png"], rates=_rates())
