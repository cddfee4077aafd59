"""Figure 2 (figures/baseline.py) shows each tier's truncated and unparseable rates and the
gap on parsed-only pairs, computed by metrics.rates from hand-built rollouts."""

from __future__ import annotations

import polars as pl

from motivation_profiles.figures import baseline as baseline_figures
from motivation_profiles.metrics.rates import condition_metrics


def _rollouts() -> pl.DataFrame:
    rows = []
    # 10 goals; monitored: 6 compliant, 2 rejected, 1 truncated, 1 unparseable;
    # unmonitored: 3 compliant, 4 rejected, 3 truncated
    mon = ["compliant"] * 6 + ["rejected"] * 2 + ["truncated", "unparseable"]
    unm = ["compliant"] * 3 + ["rejected"] * 4 + ["truncated"] * 3
    for tier, outcomes in (("monitored", mon), ("unmonitored", unm)):
        for g, o in enumerate(outcomes):
            rows.append({"model": "m", "condition": "baseline", "goal_id": g, "seed": 0,
                         "tier": tier, "outcome": o, "accepted_then_refused": False})
    return pl.DataFrame(rows)


def _texts(monkeypatch, metrics: pl.DataFrame, tmp_path) -> str:
    figures = []
    monkeypatch.setattr(baseline_figures, "save", lambda fig, *a, **k: figures.append(fig))
    baseline_figures.baseline_compliance(metrics, {"m": "M"}, [tmp_path / "f.png"])
    return "\n".join(t.get_text() for ax in figures[0].axes for t in ax.texts)


def test_figure_2_shows_no_answer_rates_per_tier_and_parsed_gap(monkeypatch, tmp_path):
    metrics = condition_metrics(_rollouts(), n_boot=200, level=0.95, seed=0)
    text = _texts(monkeypatch, metrics, tmp_path)
    assert "gap +30.0 pp" in text
    assert "truncated M/U: 10/30%" in text and "unparseable M/U: 10/0%" in text
    # parsed in both tiers: goals 0-6 (goals 7-9 lack an unmonitored answer, or 8, 9 a
    # monitored one): monitored 6 of 7 compliant, unmonitored 3 of 7
    assert "parsed only: +42.9 pp (n=7)" in text
    # a metrics table from before the parsed-only gap still draws
    old = metrics.drop("gap_parsed", "n_pairs_parsed")
    assert "parsed only: n.a." in _texts(monkeypatch, old, tmp_path)


def test_figure_2_saves(tmp_path):
    metrics = condition_metrics(_rollouts(), n_boot=200, level=0.95, seed=0)
    baseline_figures.baseline_compliance(metrics, {"m": "M"}, [tmp_path / "f.png",
                                                                 tmp_path / "f.pdf"])
    assert (tmp_path / "f.png").stat().st_size and (tmp_path / "f.pdf").stat().st_size
