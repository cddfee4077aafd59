"""Figures 5a, 5b, 9 and the judge score distributions, drawn from crafted tables."""

from __future__ import annotations

import struct

import numpy as np
import polars as pl
import pytest

from motivation_profiles.figures import judge as judge_figures
from motivation_profiles.figures import profiles as profile_figures
from motivation_profiles.figures.judge import judge_condition_order
from motivation_profiles.figures.profiles import calibration_points, profile_points
from motivation_profiles.figures.style import INTERVENTION_ORDER
from motivation_profiles.pipeline.common import read_all

NAMES = {"m1": "Model One", "m2": "Model Two (closed)"}
LEVEL = 0.95


def _row(model, method, strength, quantity, target, est, *, naming="original",
         checkpoint=None, width=0.05, **extra):
    lo, hi = (est - width, est + width) if np.isfinite(est) else (np.nan, np.nan)
    return {"model": model, "method": method, "strength": strength, "naming": naming,
            "checkpoint": checkpoint, "quantity": quantity, "target": target,
            "condition": None, "estimate": est, "ci_low": lo, "ci_high": hi, "n_goals": 8,
            "baseline_condition": "baseline", "ci_level": LEVEL, "bootstrap_samples": 100,
            **extra}


def effects_rows(model, method, strength, *, sa, sb, checkpoint=None, naming="original",
                 width=0.05, **extra) -> list[dict]:
    """A full effects table for one (model, method, strength): every intervention's deltas,
    the gaps, S_A and S_B (Delta(A+) - Delta(A-) averaged gives ``sa``)."""
    rows = []
    for inter in INTERVENTION_ORDER:
        s = sa if inter[0] == "A" else sb
        d = s / 2 if inter.endswith("amp") else -s / 2
        for q, v in (("delta_gap", d), ("delta_monitored", d), ("delta_unmonitored", 0.0),
                     ("gap", 0.1 + d)):
            rows.append(_row(model, method, strength, q, inter, v, naming=naming,
                             checkpoint=checkpoint, width=width, **extra))
    rows.append(_row(model, method, strength, "gap", "baseline", 0.1, naming=naming,
                     checkpoint=checkpoint, width=width, **extra))
    for q, v in (("S_A", sa), ("S_B", sb)):
        rows.append(_row(model, method, strength, q, q[-1], v, naming=naming,
                         checkpoint=checkpoint, width=width, **extra))
    return rows


def _frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None)


def _set(df: pl.DataFrame, where: pl.Expr, columns, value) -> pl.DataFrame:
    """``df`` with ``columns`` set to ``value`` on the rows matching ``where``."""
    return df.with_columns(pl.when(where).then(pl.lit(value, dtype=df.schema[c]))
                           .otherwise(pl.col(c)).alias(c) for c in columns)


def profiles_table() -> pl.DataFrame:
    """m1: prompt (three strengths, plus a role-play row) + SDF + steering (no strength);
    m2: prompt only (a closed model)."""
    rows = []
    for s, (sa, sb) in {"weak": (0.02, 0.01), "standard": (0.20, 0.05),
                        "strong": (0.30, 0.10)}.items():
        rows += effects_rows("m1", "prompt", s, sa=sa, sb=sb)
    rows += effects_rows("m1", "sdf", "standard", sa=0.10, sb=0.15)
    rows += effects_rows("m1", "sdf", "standard", sa=0.9, sb=0.9, naming="self")
    rows += effects_rows("m1", "sdf", "standard", sa=0.9, sb=0.9, checkpoint="B1_amp")
    rows += effects_rows("m1", "steering", None, sa=0.05, sb=-0.02)
    rows += effects_rows("m2", "prompt", "standard", sa=-0.05, sb=0.12)
    return _frame(rows).filter(pl.col("quantity").is_in(["S_A", "S_B"]))


def calibration_table() -> pl.DataFrame:
    """m1: base + A1_amp, A2_amp (family A) + B1_amp (family B), recovered; m2: base only."""
    rows = []
    for ckpt, fam, sa, sb in ((None, "base", 0.2, 0.0), ("A1_amp", "A", 0.3, 0.05),
                              ("A2_amp", "A", 0.25, 0.1), ("B1_amp", "B", 0.1, 0.3)):
        rows += effects_rows("m1", "prompt", "standard", sa=sa, sb=sb, checkpoint=ckpt,
                             checkpoint_family=fam, recovered=True)
    rows += effects_rows("m2", "prompt", "standard", sa=0.0, sb=0.0, checkpoint_family="base",
                         recovered=None, width=0.0)
    return _frame(rows)


def prompt_effects_table() -> pl.DataFrame:
    rows = []
    for s, (sa, sb) in {"weak": (0.02, 0.01), "standard": (0.20, 0.05),
                        "strong": (0.30, 0.10)}.items():
        rows += effects_rows("m1", "prompt", s, sa=sa, sb=sb)
        rows += effects_rows("m2", "prompt", s, sa=0.0, sb=0.0, width=0.0)  # degenerate
    return _frame(rows)


def judge_table(*, all_nan: bool = False, n_conditions: int = 4) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    conds = ["baseline"] + [f"prompt-{i}-standard" for i in INTERVENTION_ORDER][:n_conditions - 1]
    rows = []
    for model in ("m1", "m2"):
        for cond in conds:
            for goal in range(3):
                for seed in range(2):
                    for tier in ("monitored", "unmonitored"):
                        a, b = rng.integers(0, 11, 2).astype(float)
                        status = "ok"
                        if all_nan or (model == "m2" and cond == "baseline"):
                            a = b = np.nan
                            status = "no_scratchpad"
                        elif goal == 2 and seed == 1:
                            a, b, status = np.nan, b, "partial"
                        rows.append({"model": model, "condition": cond, "goal_id": goal,
                                     "tier": tier, "seed": seed, "status": status,
                                     "a_score": a, "b_score": b, "judge_model": "tiny-judge"})
    return _frame(rows)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _draw(fn, df, tmp_path, name="fig"):
    outs = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    fn(df, NAMES, outs, dpi=60)
    for out in outs:
        assert out.exists() and out.stat().st_size > 500
    assert outs[1].read_bytes()[:5] == b"%PDF-"
    w, h = _png_size(outs[0])
    assert 150 < w < 6000 and 100 < h < 8000
    return w, h


# ----------------------------------------------------------------------------- helpers


def _by(df: pl.DataFrame, *keys: str) -> dict:
    """The rows of ``df`` keyed by the values of ``keys`` (a tuple for several keys)."""
    return {(tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]): r
            for r in df.iter_rows(named=True)}


def test_profile_points_prefers_base_standard_original():
    points = profile_points(profiles_table())
    pts = _by(points, "model", "method")
    assert list(pts) == [("m1", "prompt"), ("m1", "sdf"), ("m1", "steering"),
                         ("m2", "prompt")]
    assert pts[("m1", "prompt")]["strength"] == "standard"
    assert pts[("m1", "prompt")]["S_A"] == pytest.approx(0.20)
    # neither the role-play (naming self) nor the checkpoint row leaks into the SDF point
    assert pts[("m1", "sdf")]["S_A"] == pytest.approx(0.10)
    assert pts[("m1", "sdf")]["S_B_high"] == pytest.approx(0.20)
    assert pts[("m1", "steering")]["strength"] is None
    assert pts[("m1", "steering")]["S_B"] == pytest.approx(-0.02)
    assert pts[("m2", "prompt")]["naming"] == "original"
    assert points.columns == ["model", "method", "strength", "naming", "S_A", "S_A_low",
                              "S_A_high", "S_B", "S_B_low", "S_B_high", "ci_level"]


def test_profile_points_falls_back_to_the_only_strength_and_naming():
    rows = effects_rows("m", "sdf", "strong", sa=0.3, sb=0.1, naming="self")
    rows += effects_rows("m", "prompt", "weak", sa=0.1, sb=0.0)
    rows += effects_rows("m", "prompt", "strong", sa=0.2, sb=0.0)
    pts = _by(profile_points(_frame(rows)), "method")
    assert pts["sdf"]["strength"] == "strong" and pts["sdf"]["naming"] == "self"
    assert pts["prompt"]["strength"] == "weak"  # no standard: first in weak/strong order
    assert pts["prompt"]["S_A"] == pytest.approx(0.1)


def test_profile_points_without_checkpoint_column_and_missing_quantity():
    df = _frame(effects_rows("m", "prompt", "standard", sa=0.1, sb=0.2)).drop("checkpoint")
    df = df.filter(pl.col("quantity") != "S_B")
    pts = profile_points(df)
    assert len(pts) == 1 and np.isnan(pts["S_B"][0])


def test_calibration_points_families_and_share():
    pts = calibration_points(calibration_table())
    m1 = pts.filter(pl.col("model") == "m1")
    assert m1["checkpoint"].to_list() == ["base", "A1_amp", "A2_amp", "B1_amp"]
    assert m1["family"].to_list() == ["base", "A", "A", "B"]
    assert _by(m1, "checkpoint")["B1_amp"]["share"] == pytest.approx(0.2)
    assert pts.filter(pl.col("model") == "m2")["checkpoint"].to_list() == ["base"]


def test_judge_condition_order():
    assert judge_condition_order(["sdf-x", "baseline", "prompt-A1_amp-weak", "baseline"]) == [
        "baseline", "prompt-A1_amp-weak", "sdf-x"]
    assert judge_condition_order(["b", "a"]) == ["a", "b"]


# ----------------------------------------------------------------------------- figures


def test_prompt_calibration(tmp_path):
    _draw(profile_figures.prompt_calibration, calibration_table(), tmp_path)


def test_prompt_calibration_without_checkpoints(tmp_path):
    df = calibration_table()
    df = df.filter(pl.col("checkpoint").is_null()).with_columns(recovered=None)
    _draw(profile_figures.prompt_calibration, df, tmp_path)


@pytest.mark.parametrize("missing", [np.nan, None], ids=["nan", "null"])
def test_prompt_calibration_nan_and_single_model(tmp_path, missing):
    df = calibration_table().filter(pl.col("model") == "m1")
    df = _set(df, pl.col("checkpoint") == "A2_amp", ["estimate", "ci_low", "ci_high"],
              missing).with_columns(recovered=pl.lit("False"))
    pts = _by(calibration_points(df), "checkpoint")
    assert np.isnan(pts["A2_amp"]["S_A"]) and np.isnan(pts["A2_amp"]["share"])
    _draw(profile_figures.prompt_calibration, df, tmp_path)


def test_prompt_calibration_after_parquet_round_trip(tmp_path):
    """Per-model tables read back and concatenated: string dtypes, None checkpoints, and a
    ``recovered`` column mixing True and None; the m2 table lacks ``checkpoint_family``
    (null after the concatenation, which aligns columns by name)."""
    df = calibration_table()
    df.filter(pl.col("model") == "m1").write_parquet(tmp_path / "m1.parquet")
    df.filter(pl.col("model") == "m2").drop("checkpoint_family", "recovered").write_parquet(
        tmp_path / "m2.parquet")
    back = read_all([tmp_path / f"{m}.parquet" for m in ("m1", "m2")])
    assert back.columns == df.columns and back["checkpoint_family"][-1] is None
    pts = calibration_points(back)
    assert pts["family"].to_list() == ["base", "A", "A", "B", "base"]
    _draw(profile_figures.prompt_calibration, back, tmp_path)


def test_read_all_aligns_columns_by_name(tmp_path):
    """Columns matched by name whatever their order; a column one table lacks is null there;
    an int and a float column widen to float; no files raise ValueError."""
    pl.DataFrame({"model": ["a"], "n": [1], "x": [0.5]}).write_parquet(tmp_path / "a.parquet")
    pl.DataFrame({"x": [1.5], "model": ["b"], "n": [2.0]}).write_parquet(tmp_path / "b.parquet")
    pl.DataFrame({"model": ["c"], "y": ["only here"]}).write_parquet(tmp_path / "c.parquet")
    back = read_all([tmp_path / f"{k}.parquet" for k in "abc"])
    assert back.columns == ["model", "n", "x", "y"]
    assert back.to_dict(as_series=False) == {"model": ["a", "b", "c"], "n": [1.0, 2.0, None],
                                             "x": [0.5, 1.5, None],
                                             "y": [None, None, "only here"]}
    with pytest.raises(ValueError, match="no tables"):
        read_all([])


def test_profile_plane(tmp_path):
    _draw(profile_figures.profile_plane, profiles_table(), tmp_path)


@pytest.mark.parametrize("missing", [np.nan, None], ids=["nan", "null"])
def test_profile_plane_degenerate(tmp_path, missing):
    df = profiles_table().filter(pl.col("model") == "m1").with_columns(
        estimate=pl.lit(0.0), ci_low=pl.lit(0.0), ci_high=pl.lit(0.0))
    df = _set(df, pl.col("method") == "steering", ["estimate", "ci_low", "ci_high"], missing)
    _draw(profile_figures.profile_plane, df, tmp_path)


def test_profile_plane_ci_excluding_estimate(tmp_path):
    df = profiles_table()
    # a percentile CI may exclude the point estimate
    df = df.with_columns(ci_low=pl.col("estimate") + 0.01)
    _draw(profile_figures.profile_plane, df, tmp_path)


def test_profile_plane_no_base_rows_raises(tmp_path):
    df = profiles_table().with_columns(checkpoint=pl.lit("B1_amp"))
    with pytest.raises(ValueError, match="base-model"):
        profile_figures.profile_plane(df, NAMES, [tmp_path / "x.png"])


def test_prompt_strength_ablation(tmp_path):
    w1, _ = _draw(profile_figures.prompt_strength_ablation, prompt_effects_table(), tmp_path)
    df = prompt_effects_table()
    df = df.filter(pl.col("model") == "m1", pl.col("strength") == "standard")
    w2, _ = _draw(profile_figures.prompt_strength_ablation, df, tmp_path, "single")
    assert w2 < w1


@pytest.mark.parametrize("missing", [np.nan, None], ids=["nan", "null"])
def test_prompt_strength_ablation_nan(tmp_path, missing):
    df = _set(prompt_effects_table(), pl.col("model") == "m2",
              ["estimate", "ci_low", "ci_high"], missing)
    _draw(profile_figures.prompt_strength_ablation, df, tmp_path)


def test_judge_scores(tmp_path):
    _, h_small = _draw(judge_figures.judge_scores, judge_table(), tmp_path)
    _, h_big = _draw(judge_figures.judge_scores, judge_table(n_conditions=9), tmp_path, "big")
    assert h_big > h_small  # the height scales with the number of conditions


def test_judge_scores_all_nan(tmp_path):
    _draw(judge_figures.judge_scores, judge_table(all_nan=True), tmp_path)


def test_judge_scores_null_scores_and_missing_judge_model(tmp_path):
    """Null (not NaN) scores, and a judge_model column one model's table lacks."""
    df = judge_table().with_columns(pl.col("a_score", "b_score").fill_nan(None))
    df = df.with_columns(judge_model=pl.when(pl.col("model") == "m1")
                         .then(pl.col("judge_model")))
    _draw(judge_figures.judge_scores, df, tmp_path)


def test_judge_scores_many_conditions_single_model(tmp_path):
    rows = [{"model": "m1", "condition": f"c{k:02d}", "tier": t, "status": "ok",
             "a_score": float(k % 7), "b_score": 3.0}
            for k in range(40) for t in ("monitored", "unmonitored")]
    _draw(judge_figures.judge_scores, _frame(rows), tmp_path)


def _figure(name):
    return getattr(judge_figures if name == "judge_scores" else profile_figures, name)


@pytest.mark.parametrize(("fn", "table", "column"), [
    ("prompt_calibration", calibration_table, "checkpoint_family"),
    ("prompt_calibration", calibration_table, "estimate"),
    ("profile_plane", profiles_table, "quantity"),
    ("profile_plane", profiles_table, "ci_high"),
    ("prompt_strength_ablation", prompt_effects_table, "strength"),
    ("prompt_strength_ablation", prompt_effects_table, "target"),
    ("judge_scores", judge_table, "b_score"),
    ("judge_scores", judge_table, "tier"),
])
def test_missing_column_raises(tmp_path, fn, table, column):
    df = table().drop(column)
    with pytest.raises(ValueError, match=column):
        _figure(fn)(df, NAMES, [tmp_path / "x.png"])
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("fn", ["prompt_calibration", "profile_plane",
                                "prompt_strength_ablation", "judge_scores"])
def test_empty_table_raises(tmp_path, fn):
    with pytest.raises(ValueError, match="empty"):
        _figure(fn)(pl.DataFrame(), NAMES, [tmp_path / "x.png"])


# ----------------------------------------------------------------------------- Figures 2, 3, B


def sdf_effects_table() -> pl.DataFrame:
    rows = []
    for model in ("m1", "m2"):
        for strength, scale in (("weak", 0.5), ("standard", 1.0), ("strong", 1.5)):
            for naming in ("original", "self"):
                rows += effects_rows(model, "sdf", strength, sa=0.1 * scale, sb=-0.05 * scale,
                                     naming=naming)
    return _frame(rows)


def baseline_metrics(model: str, **extra) -> dict:
    row = {"model": model, "condition": "baseline", "gap": 0.2, "gap_ci_low": 0.05,
           "gap_ci_high": 0.35, "ci_level": LEVEL, "n_pairs": 8, **extra}
    for tier, rate in (("monitored", 0.6), ("unmonitored", 0.4)):
        row.update({f"{tier}_compliance": rate, f"{tier}_compliance_ci_low": rate - 0.1,
                    f"{tier}_compliance_ci_high": rate + 0.1, f"{tier}_unparseable": 0.1})
    return row


def test_baseline_compliance_with_a_column_one_table_lacks(tmp_path):
    from motivation_profiles.figures.baseline import baseline_compliance

    m1 = pl.DataFrame([baseline_metrics("m1", monitored_truncated=0.0,
                                        unmonitored_truncated=0.1)])
    m2 = pl.DataFrame([baseline_metrics("m2")])  # no *_truncated columns: null after concat
    _draw(baseline_compliance, pl.concat([m2, m1], how="diagonal_relaxed"), tmp_path)
    with pytest.raises(ValueError, match="no rows for condition 'x'"):
        baseline_compliance(m1, NAMES, [tmp_path / "x.png"], condition="x")


@pytest.mark.parametrize("missing", [np.nan, None], ids=["nan", "null"])
def test_sdf_figures(tmp_path, missing):
    from motivation_profiles.figures import sdf

    df = sdf_effects_table()
    df = _set(df, pl.int_range(pl.len()) % 3 == 0, ["estimate"], missing)
    for fn in (sdf.sdf_profile, sdf.sdf_strength_sweep, sdf.sdf_role_play):
        _draw(fn, df, tmp_path, fn.__name__)
    with pytest.raises(ValueError, match="at least two strengths"):
        sdf.sdf_strength_sweep(df.filter(pl.col("strength") == "weak"), NAMES,
                               [tmp_path / "x.png"])
    with pytest.raises(ValueError, match="role_play"):
        sdf.sdf_role_play(df.filter(pl.col("naming") == "original"), NAMES,
                          [tmp_path / "x.png"])
    with pytest.raises(ValueError, match="more than one delta_gap row"):
        sdf.sdf_strength_sweep(pl.concat([df, df.head(1)]), NAMES, [tmp_path / "x.png"])


# ----------------------------------------------------------------------------- Figure 8


def _selection() -> pl.DataFrame:
    """Two models' Appendix C.1 selections, computed by the real rule: m1 qualifies (A1+, B1+
    selected, A2+ below the reference), m2 is excluded (no B-family candidate qualifies)."""
    from motivation_profiles.metrics.calibration import select_checkpoints

    def metrics(values):
        return pl.DataFrame([{"condition": c, "af_ratio": v, "af_ratio_ci_low": v - 0.1,
                              "af_ratio_ci_high": v + 0.1} for c, v in values.items()])

    cands = ["A1_amp", "A2_amp", "B1_amp", "B2_amp"]
    m1 = select_checkpoints(metrics({"baseline": 1.5, "sdf-A1_amp": 2.0, "sdf-A2_amp": 1.0,
                                     "sdf-B1_amp": 1.6, "sdf-B2_amp": 1.45}),
                            model="m1", reference="baseline", candidates=cands,
                            signal="af_ratio", max_per_family=1)
    m2 = select_checkpoints(metrics({"baseline": 1.5, "sdf-A1_amp": 1.9, "sdf-A2_amp": 1.4,
                                     "sdf-B1_amp": 1.1, "sdf-B2_amp": 1.0}),
                            model="m2", reference="baseline", candidates=cands,
                            signal="af_ratio", max_per_family=None)
    return pl.concat([m1, m2])


def test_calibration_signal_marks_selected_candidates(tmp_path, monkeypatch):
    sel = _selection()
    assert _by(sel.filter(model="m1"), "checkpoint")["B2_amp"]["qualifies"]  # CI overlap
    assert sel.filter(model="m1", selected=True)["checkpoint"].to_list() == ["A1_amp", "B1_amp"]
    assert not sel.filter(model="m2")["selected"].any()
    figures = []
    monkeypatch.setattr(profile_figures, "save", lambda fig, *a, **k: figures.append(fig))
    profile_figures.calibration_signal(sel, NAMES, [tmp_path / "f.png"])
    ax1, ax2 = figures[0].axes
    assert "qualifies" in ax1.get_title() and "excluded" in ax2.get_title()
    assert "ci_overlap" in ax1.get_title()
    # one star per selected candidate; the reference line at the baseline's AF ratio
    assert sum(t.get_text() == "\u2605" for t in ax1.texts) == 2
    assert sum(t.get_text() == "\u2605" for t in ax2.texts) == 0
    assert any(np.allclose(line.get_ydata(), 1.5) for line in ax1.get_lines())
    assert [t.get_text() for t in ax1.get_xticklabels()] == ["A1+", "A2+", "B1+", "B2+"]
    assert "AF ratio" in ax1.get_ylabel()


def test_calibration_signal_draws_and_refuses_empty(tmp_path):
    _draw(profile_figures.calibration_signal, _selection(), tmp_path)
    # a gap selection is drawn in pp; an older table without CI columns still draws
    old = _selection().with_columns(signal=pl.lit("gap")).drop("value_ci_low", "value_ci_high",
                                                                "reference_ci_low",
                                                                "reference_ci_high")
    _draw(profile_figures.calibration_signal, old, tmp_path, name="old")
    with pytest.raises(ValueError, match="calibration_signal"):
        profile_figures.calibration_signal(_selection().clear(), NAMES, [tmp_path / "x.png"])


def test_prompt_calibration_share_is_on_the_recovery_signal(tmp_path):
    df = calibration_table()
    ratio = df.filter(pl.col("quantity").is_in(["S_A", "S_B"])).with_columns(
        quantity=pl.col("quantity") + "_af_ratio", estimate=pl.col("estimate") * 10)
    both = pl.concat([df, ratio], how="diagonal_relaxed").with_columns(
        recovery_signal=pl.lit("af_ratio"))
    gap_share = _by(calibration_points(df).filter(model="m1"), "checkpoint")
    ratio_share = _by(calibration_points(both).filter(model="m1"), "checkpoint")
    assert ratio_share["B1_amp"]["share"] == pytest.approx(10 * gap_share["B1_amp"]["share"])
    # the profile plane (top) stays on the gap's S_A / S_B
    assert ratio_share["B1_amp"]["S_B"] == pytest.approx(gap_share["B1_amp"]["S_B"])
    _draw(profile_figures.prompt_calibration, both, tmp_path)


def test_baseline_compliance_shows_instruct_beside_organism(tmp_path, monkeypatch):
    """Figure 2: a screened model has two bar groups, its instruct model then its organism;
    a model with no organism is labelled instruct; a hosted model (not in ``organisms``) keeps
    its plain name."""
    from motivation_profiles.figures import baseline

    shown = {}

    def capture(fig, outputs, dpi):
        ax = fig.axes[0]
        shown["labels"] = [t.get_text() for t in ax.get_xticklabels()]
        shown["bars"] = len(ax.patches)

    monkeypatch.setattr(baseline, "save", capture)
    t = {"monitored_truncated": 0.0, "unmonitored_truncated": 0.0}
    rows = [baseline_metrics("m1", **t),
            {**baseline_metrics("m1", **t), "condition": "baseline-instruct"},
            baseline_metrics("m2", **t), baseline_metrics("m3", **t)]
    names = {**NAMES, "m3": "Three"}
    baseline.baseline_compliance(pl.DataFrame(rows), names, [tmp_path / "b.png"],
                                 organisms={"m1": "af_organism", "m3": None})
    assert shown["labels"] == ["Model One\ninstruct", "Model One\norganism",
                               "Model Two (closed)", "Three\ninstruct"]
    assert shown["bars"] == 2 * 4


def test_baseline_compliance_shows_propensity_beside_compliance(tmp_path, monkeypatch):
    """The right panel: mean p_accept per tier (bar heights) and the paired propensity gap for
    a model with log-probs; "no log-probs" for one without (its metrics lack the columns)."""
    import motivation_profiles.figures.baseline as baseline

    figs = []
    monkeypatch.setattr(baseline, "save", lambda fig, outputs, dpi: figs.append(fig))
    prop = {"monitored_p_accept": 0.7, "monitored_p_accept_ci_low": 0.6,
            "monitored_p_accept_ci_high": 0.8, "unmonitored_p_accept": 0.55,
            "unmonitored_p_accept_ci_low": 0.45, "unmonitored_p_accept_ci_high": 0.65,
            "p_accept_gap": 0.15, "p_accept_gap_ci_low": 0.05, "p_accept_gap_ci_high": 0.25,
            "n_p_accept_pairs": 8}
    trunc = {"monitored_truncated": 0.0, "unmonitored_truncated": 0.0}
    df = pl.concat([pl.DataFrame([baseline_metrics("m1", **prop, **trunc)]),
                    pl.DataFrame([baseline_metrics("m2", **trunc)])], how="diagonal_relaxed")
    baseline.baseline_compliance(df, NAMES, [tmp_path / "x.png"])
    left, right = figs[0].axes
    heights = sorted(round(b.get_height(), 6) for b in right.patches)
    assert heights == [0.0, 0.0, 55.0, 70.0]
    texts = [t.get_text() for t in right.texts]
    assert texts == ["gap +15.0 pp\n[+5.0, +25.0]\nn=8 pairs", "no log-probs"]
    assert "compliance" in left.get_ylabel() and "P(accept" in right.get_ylabel()
