"""Shared figure helpers: the vector-norm caption line every steering figure carries."""

from __future__ import annotations

import matplotlib.pyplot as plt
import polars as pl

from motivation_profiles.figures.style import norms_note, save


def _norms() -> pl.DataFrame:
    rows = []
    for vector, kind, norms in (("expectations_ooc", "fitted", [1.0, 2.5, 40.0]),
                                ("consequences_ooc", "fitted", [0.5, 7.25, 3.0]),
                                ("random_expectations_ooc_1", "random", [1.0, 2.5, 40.0])):
        for layer, n in enumerate(norms):
            rows.append({"model": "m", "vector": vector, "kind": kind, "of": vector,
                         "scale": "coef", "layer": layer, "norm": n, "steered": layer >= 1})
    return pl.DataFrame(rows)


def test_norms_note_gives_each_fitted_vector_at_its_steered_layers():
    text = norms_note(_norms(), {"m": "Model M"})
    assert "Model M: consequences_ooc [L1 7.25, L2 3] (coef); expectations_ooc [L1 2.5, L2 40]" \
        in text
    assert "random_" not in text.split("\n", 1)[1]  # controls are norm-matched: said once
    assert "L0" not in text and "steered layers" in text
    assert norms_note(None) is None and norms_note(_norms().clear()) is None
    # without a steered flag every layer is given
    assert "L0 1" in norms_note(_norms().drop("steered"))


def test_save_prints_the_note_under_the_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save(fig, [tmp_path / "f.png"], 50, note=norms_note(_norms()))
    assert (tmp_path / "f.png").stat().st_size > 0
    fig2, ax2 = plt.subplots()
    ax2.plot([0, 1], [0, 1])
    texts = []
    fig2.text = lambda *a, **k: texts.append(a[2])  # what save writes on the figure
    save(fig2, [tmp_path / "g.png"], 50, note="caption line")
    assert texts == ["caption line"]
