"""Steering-vector fitting and diagnostics (vectors.py) on synthetic activations: planted
direction recovery (and why the standardization back-map matters), grouped CV that does not
leak a pair's mirror row, norm-matched random controls, layer selection, metrics with known
values and the safetensors round trip."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from motivation_profiles.steering.vectors import (
    DIAGNOSTIC_COLUMNS,
    control_seed,
    diagnostics,
    fit_directions,
    load_vectors,
    random_controls,
    save_vectors,
    select_layers,
    standardize,
    tpr_at_fpr,
    vector_norms,
)


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def planted(n: int = 1500, d: int = 12, seed: int = 0, base_scale: tuple = (1, 1000)):
    """pos = base + u + noise, neg = base + noise'. The noise (per-feature scales from 0.5 to
    10) lives orthogonal to u, plus a small component along u, so u is the optimal (LDA)
    direction in activation space, while the features' spreads differ 20-fold: the
    standardized (z-space) weights point elsewhere. ``base`` has wildly different scales too
    but cancels in the differences (not in each side's own projection: validation AUROC
    needs a small ``base_scale``)."""
    rng = np.random.default_rng(seed)
    u = np.ones(d) / np.sqrt(d)
    scales = np.geomspace(0.5, 10, d)
    proj = np.eye(d) - np.outer(u, u)

    def noise():
        return (rng.normal(size=(n, d)) * scales) @ proj + 0.2 * rng.normal(size=(n, 1)) * u

    base = rng.normal(size=(n, d)) * np.geomspace(*base_scale, d)
    pos = base + u + noise()
    neg = base + noise()
    return pos[:, None, :], neg[:, None, :], u


def test_logistic_recovers_planted_direction_only_with_back_map():
    pos, neg, u = planted()
    v = fit_directions(pos, neg, estimator="logistic", scale="unit", seed=0)
    assert v.shape == (1, 12) and v.dtype == np.float32
    assert cosine(v[0], u) > 0.99
    # The same fit without mapping back to activation units (z-space coefficients):
    z, y, sigma = standardize((pos - neg)[:, 0])
    assert sigma.max() / sigma.min() > 5
    w_z = LogisticRegression(C=1.0, fit_intercept=False, max_iter=5000).fit(z, y).coef_[0]
    assert abs(cosine(w_z, u)) < 0.9
    assert cosine(w_z / sigma, u) > 0.99
    assert cosine(w_z / sigma, v[0]) > 0.9999


def test_coef_scale_saves_the_mapped_back_coefficients():
    pos, neg, u = planted()
    coef = fit_directions(pos, neg, estimator="logistic", C=0.5, scale="coef", seed=0)[0]
    unit = fit_directions(pos, neg, estimator="logistic", C=0.5, scale="unit", seed=0)[0]
    gap = fit_directions(pos, neg, estimator="logistic", C=0.5, scale="gap", seed=0)[0]
    z, y, sigma = standardize((pos - neg)[:, 0])
    w = LogisticRegression(C=0.5, fit_intercept=False, max_iter=5000).fit(z, y).coef_[0] / sigma
    np.testing.assert_allclose(coef, w, rtol=1e-4)           # the activation-scale vector
    assert cosine(coef, unit) > 0.99999 and cosine(coef, gap) > 0.99999
    assert np.linalg.norm(unit) == pytest.approx(1.0, rel=1e-5)
    assert not np.isclose(np.linalg.norm(coef), 1.0)
    with pytest.raises(ValueError, match="scale"):
        fit_directions(pos, neg, scale="norm")


def test_vector_norms_per_layer():
    a = np.array([[3.0, 4.0], [0.0, 0.0]])
    b = np.array([[1.0, 0.0], [0.0, 2.0]])
    t = vector_norms({"expectations_ooc": (a, {"kind": "fitted", "of": "expectations_ooc",
                                               "scale": "coef"}),
                      "random_expectations_ooc_1": (b, {"kind": "random",
                                                        "of": "expectations_ooc"})})
    assert t["vector"].to_list() == ["expectations_ooc"] * 2 + ["random_expectations_ooc_1"] * 2
    assert t["layer"].to_list() == [0, 1, 0, 1]
    assert t["norm"].to_list() == pytest.approx([5.0, 0.0, 1.0, 2.0])
    assert t["scale"].to_list()[:2] == ["coef", "coef"] and t["scale"][2] is None


def test_ridge_and_mean_diff_recover_it_too():
    pos, neg, u = planted()
    ridge = fit_directions(pos, neg, estimator="ridge", ridge_alpha=1.0, scale="unit")
    assert cosine(ridge[0], u) > 0.99
    rng = np.random.default_rng(1)
    n, d = 400, 16
    u2 = rng.normal(size=d)
    u2 /= np.linalg.norm(u2)
    base = rng.normal(size=(n, d)) * np.geomspace(1, 100, d)
    pos2 = base + 3 * u2 + rng.normal(size=(n, d))
    neg2 = base + rng.normal(size=(n, d))
    md = fit_directions(pos2[:, None], neg2[:, None], estimator="mean_diff", scale="unit")
    assert cosine(md[0], u2) > 0.99
    np.testing.assert_allclose(np.linalg.norm(md[0]), 1.0, rtol=1e-6)


@pytest.mark.parametrize("estimator", ["logistic", "ridge", "mean_diff"])
def test_gap_scale_and_sign(estimator):
    pos, neg, _ = planted(n=300)
    # two layers: the second has the sides swapped, so its direction must flip
    pos2 = np.concatenate([pos, neg], axis=1)
    neg2 = np.concatenate([neg, pos], axis=1)
    v = fit_directions(pos2, neg2, estimator=estimator, scale="gap")
    unit = fit_directions(pos2, neg2, estimator=estimator, scale="unit")
    diffs = (pos2 - neg2).astype(np.float64)
    for layer in range(2):
        u = unit[layer].astype(np.float64)
        gap = float(np.mean(diffs[:, layer] @ u))
        assert gap > 0  # sign: positives project higher
        np.testing.assert_allclose(np.linalg.norm(v[layer]), gap, rtol=1e-5)
        np.testing.assert_allclose(v[layer] / np.linalg.norm(v[layer]), u, atol=1e-6)
        assert float(np.mean(diffs[:, layer] @ v[layer])) > 0
    np.testing.assert_allclose(unit[0], -unit[1], atol=1e-6)


def test_degenerate_inputs():
    zeros = np.zeros((4, 2, 3))
    const = np.ones((4, 2, 3))
    assert not fit_directions(const, const).any()  # no signal: zero vectors
    # a zero-variance feature keeps sigma 1 and does not break the fit
    pos = np.random.default_rng(0).normal(size=(6, 1, 3))
    pos[:, 0, 2] = 5.0
    neg = pos.copy()
    neg[:, 0, :2] -= 1.0
    _, _, sigma = standardize((pos - neg)[:, 0])
    assert sigma[2] == 1.0
    assert np.isfinite(fit_directions(pos, neg)).all()
    with pytest.raises(ValueError, match="estimator"):
        fit_directions(const, zeros, estimator="svm")
    with pytest.raises(ValueError, match="same shape"):
        fit_directions(const, zeros[:, :1])
    with pytest.raises(ValueError, match=r"3 pairs, 5 folds"):
        diagnostics(const[:3], zeros[:3], ["a", "b", "c"], folds=5)


def test_grouped_cv_does_not_leak_the_mirror_row():
    """Pure-noise differences: nothing to learn. With rows split ungrouped, a held-out -d_i has
    its +d_i in training; a high-dimensional fit memorizes it and AUROC looks high. Grouped by
    pair, both rows are held out together and AUROC stays near chance."""
    rng = np.random.default_rng(0)
    n, d, folds = 40, 200, 5
    pos = rng.normal(size=(n, 1, d))
    neg = rng.normal(size=(n, 1, d))
    ids = [f"pair{i}" for i in range(n)]
    ours = diagnostics(pos, neg, ids, {}, estimator="logistic", folds=folds, seed=0)
    cv = ours.filter(pl.col("split") == "cv").row(0, named=True)
    assert abs(cv["auroc"] - 0.5) < 0.15
    assert cv["n_pairs"] == n and cv["auroc_std"] >= 0

    diffs = (pos - neg)[:, 0]
    z, y, sigma = standardize(diffs)
    scores = np.empty(2 * n)
    for train, test in KFold(folds, shuffle=True, random_state=0).split(z):
        w = LogisticRegression(fit_intercept=False).fit(z[train], y[train]).coef_[0] / sigma
        scores[test] = (z[test] * sigma) @ (w / np.linalg.norm(w))
    ungrouped = roc_auc_score(y, scores)
    assert ungrouped > 0.85
    assert ungrouped - cv["auroc"] > 0.3


def test_cv_on_a_real_signal_and_table_shape():
    pos, neg, _ = planted(n=200, base_scale=(0.01, 0.1))
    pos = np.concatenate([pos, pos], axis=1)          # layer 1: no signal at all
    neg = np.concatenate([neg, pos[:, :1]], axis=1)
    val = {"validation": (pos[:50], neg[:50]), "keyword_hard": (pos[50:80], neg[50:80])}
    diag = diagnostics(pos[80:], neg[80:], np.arange(120), val, estimator="logistic", C=1.0,
                       scale="gap", folds=3, seed=0)
    assert list(diag.columns) == DIAGNOSTIC_COLUMNS
    assert diag.schema["layer"] == pl.Int64 == diag.schema["n_pairs"]
    assert diag.schema["split"] == pl.Utf8 and diag.schema["auroc_std"] == pl.Float64
    assert diag.select("split", "layer").rows() == [
        ("cv", 0), ("cv", 1), ("validation", 0), ("validation", 1), ("keyword_hard", 0),
        ("keyword_hard", 1)]
    good = {r["split"]: r for r in diag.filter(pl.col("layer") == 0).iter_rows(named=True)}
    assert all(r["auroc"] > 0.9 and r["paired_accuracy"] > 0.9 for r in good.values())
    assert good["validation"]["n_pairs"] == 50 and good["cv"]["n_pairs"] == 120
    assert good["validation"]["auroc_std"] is None             # undefined outside CV: null
    assert (diag.filter(pl.col("layer") == 1)["vector_norm"] == 0).all()
    assert (diag.filter(pl.col("layer") == 1)["auroc"] == 0.5).all()
    again = diagnostics(pos[80:], neg[80:], np.arange(120), val, folds=3, seed=0)
    assert_frame_equal(diag, again)
    no_cv = diagnostics(pos[80:], neg[80:], None, val, folds=None)
    assert "cv" not in set(no_cv["split"])


def test_validation_metrics_on_a_crafted_case():
    p = np.array([3.0, 2.0, 0.5, 1.5])
    q = np.array([1.0, 0.0, -1.0, 2.0])
    pos = np.stack([p, np.ones(4)], axis=1)[:, None, :]
    neg = np.stack([q, -np.ones(4)], axis=1)[:, None, :]
    vec = np.array([[5.0, 0.0]])                           # norm 5: metrics use the unit u
    diag = diagnostics(None, None, None, {"validation": (pos, neg)}, vectors=vec)
    row = diag.row(0, named=True)
    assert row["split"] == "validation" and row["n_pairs"] == 4
    # AUROC: P(pos > neg) with ties half: (4 + 3.5 + 2 + 3) / 16
    assert row["auroc"] == pytest.approx(12.5 / 16)
    assert row["paired_accuracy"] == pytest.approx(0.75)   # (1.5, 2.0) is the wrong way round
    assert row["tpr_at_5fpr"] == pytest.approx(0.25)       # only 3.0 beats every negative
    assert row["mean_gap"] == pytest.approx(np.mean(p - q))
    cos_p = p / np.sqrt(p**2 + 1)
    cos_q = q / np.sqrt(q**2 + 1)
    assert row["cosine_gap"] == pytest.approx(cos_p.mean() - cos_q.mean())
    assert row["vector_norm"] == pytest.approx(5.0)
    empty = diagnostics(None, None, None, {}, vectors=vec)
    assert empty.is_empty() and list(empty.columns) == DIAGNOSTIC_COLUMNS
    with pytest.raises(ValueError, match="training pairs"):
        diagnostics(None, None, None, {})


def test_tpr_at_5fpr_picks_the_largest_tpr_within_the_fpr_budget():
    labels = np.r_[np.ones(10), np.zeros(40)]
    neg_scores = np.arange(40.0)                            # 0..39
    pos_scores = np.arange(10.0) + 36.5                     # 36.5 .. 45.5
    scores = np.r_[pos_scores, neg_scores]
    # FPR <= 0.05 allows 2 of 40 negatives at or above the threshold (38, 39): the lowest
    # such threshold, 37.5, admits every positive but 36.5: 9/10
    assert tpr_at_fpr(labels, scores) == pytest.approx(0.9)


def test_random_controls_match_norms_and_are_seeded():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(4, 2048)) * np.array([[0.1], [1.0], [10.0], [0.0]])
    controls = random_controls(real, n=3, seed=7)
    assert len(controls) == 3
    for c in controls:
        assert c.shape == real.shape and c.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(c[:3], axis=1),
                                   np.linalg.norm(real[:3], axis=1), rtol=1e-6)
        assert not c[3].any()
        for layer in range(3):
            assert abs(cosine(c[layer], real[layer])) < 0.1
    assert not np.allclose(controls[0], controls[1])
    np.testing.assert_array_equal(random_controls(real, n=3, seed=7)[2], controls[2])
    assert not np.allclose(random_controls(real, n=1, seed=8)[0], controls[0])


def _paper_controls(real: np.ndarray) -> dict[str, np.ndarray]:
    """Every random control of the paper config, drawn as the random_vectors rule draws it
    (the same real vector for all of them, so only the seeds can tell them apart)."""
    from conftest import absolutize, load_repo_config

    from motivation_profiles.steering.names import parse_vector
    from motivation_profiles.steering.plan import SteeringPlan

    paper = absolutize(load_repo_config("configs/paper.yaml"))
    seed = paper["steering"]["random"]["seed"]
    out = {}
    for name in SteeringPlan.from_config(paper).random_vectors():
        ref = parse_vector(name)
        s = control_seed(seed, f"{ref.concept}_{ref.source}", ref.k)
        out[name] = random_controls(real, n=1, seed=s)[0]
    return out


def test_paper_random_controls_are_independent_draws():
    real = np.random.default_rng(0).normal(size=(3, 256))
    controls = _paper_controls(real)
    assert len(controls) == 20                      # D.3: five per real vector, 20 in all
    names = sorted(controls)
    flat = np.stack([controls[n].ravel() for n in names]).astype(np.float64)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    cos = np.abs(unit @ unit.T)[np.triu_indices(len(names), k=1)]
    # independent Gaussians in 768 dimensions: |cos| ~ 0.04; identical draws give 1
    assert cos.max() < 0.25, cos.max()
    # same seed reproduces the same control
    again = _paper_controls(real)
    for n in names:
        np.testing.assert_array_equal(again[n], controls[n])


def test_control_seed_differs_across_k_vector_and_seed():
    seeds = {control_seed(s, v, k) for s in (0, 1)
             for v in ("expectations_ooc", "expectations_ic", "consequences_ooc")
             for k in range(1, 6)}
    assert len(seeds) == 2 * 3 * 5
    assert control_seed(0, "expectations_ooc", 1) == control_seed(0, "expectations_ooc", 1)
    # the old derivation (the seed string's bytes, little-endian, mod 2**32) kept only its
    # first four bytes ("0|ex", "0|co"): all controls of a concept got the same seed
    old = {int.from_bytes(f"0|{v}|{k}".encode(), "little") % 2**32
           for v in ("expectations_ooc", "expectations_ic") for k in range(1, 6)}
    assert len(old) == 1


def test_select_layers_top_k_and_ties():
    a = pl.DataFrame({"layer": [0, 1, 2, 3, 0, 1, 2, 3], "split": ["validation"] * 4 + ["cv"] * 4,
                      "auroc": [0.6, 0.9, 0.8, 0.9, 1.0, 0.5, 0.5, 0.5]})
    assert select_layers(a, k=2) == [1, 3]
    assert select_layers(a, k=1) == [1]                     # tie 1 vs 3 -> lower layer
    assert select_layers(a, k=1, split="cv") == [0]
    b = a.with_columns(pl.Series("auroc", [0.6, 0.5, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0]))
    # averaged over both tables: layer 2 (0.9), then 1 and 3 tie at 0.7 -> 1
    assert select_layers(pl.concat([a, b]), k=2) == [1, 2]
    assert select_layers(a, k=10) == [0, 1, 2, 3]
    # NaN (as numpy gives it) and null (as a table read back gives it) are never chosen
    c = a.with_columns(pl.Series("auroc", [float("nan"), None, 0.1, 0.2, 1.0, 0.5, 0.5, 0.5]))
    assert select_layers(c, k=10) == [2, 3]
    # skipped in the mean: layer 0 scores 0.6 and layer 1 0.9, above 2 (0.45) and 3 (0.55)
    assert select_layers(pl.concat([a, c]), k=2) == [0, 1]
    with pytest.raises(ValueError, match="NaN"):
        select_layers(c.filter(pl.col("layer") < 2), k=1)
    with pytest.raises(ValueError, match="keyword_hard"):
        select_layers(a, k=1, split="keyword_hard")
    with pytest.raises(ValueError, match="metric"):
        select_layers(a, k=1, metric="loss")


def test_save_load_round_trip(tmp_path):
    vec = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    meta = {"name": "expectations_ooc", "concept": "expectations", "source": "ooc",
            "estimator": "logistic", "pooling": "response_mean", "scale": "gap",
            "kind": "fitted", "seed": "0", "of": "expectations_ooc"}
    path = tmp_path / "vectors" / "expectations_ooc.safetensors"
    save_vectors(path, vec, meta)
    got, got_meta = load_vectors(path)
    np.testing.assert_array_equal(got, vec)
    assert got.dtype == np.float32 and got_meta == meta
    assert [p.name for p in path.parent.iterdir()] == [path.name]   # no temporary left
    with pytest.raises(TypeError, match="seed"):
        save_vectors(path, vec, {**meta, "seed": 0})
    with pytest.raises(ValueError, match="finite"):
        save_vectors(path, vec * np.nan, meta)
