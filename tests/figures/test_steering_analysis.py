"""Steering tables (summary, raw summary, Wilson CIs) and the steering figures, on crafted
tables."""

from __future__ import annotations

import math
import struct

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from motivation_profiles.figures import steering as fs
from motivation_profiles.figures import steering_activations as fsa
from motivation_profiles.metrics.rates import wilson_ci
from motivation_profiles.metrics.steering import (
    RAW_COLUMNS,
    SUMMARY_COLUMNS,
    raw_summary,
    steering_summary,
    wilson_interval,
)
from motivation_profiles.steering.names import raw_condition, steer_condition

NAMES = {"m1": "Model One", "m2": "Model Two"}
HIGH = 2.0
FITTED = ["expectations_ooc", "consequences_ooc", "expectations_ic", "consequences_ic"]
RANDOM = ["random_expectations_ooc_1", "random_expectations_ooc_2", "random_consequences_ic_1"]
MULTS = [-4.0, 4.0]


def _figure(name):
    """A figure function, from the figure module that draws it."""
    return getattr(fsa if hasattr(fsa, name) else fs, name)


def _metrics_row(model: str, condition: str, mon: float, unmon: float, n: int = 20) -> dict:
    row = {"model": model, "condition": condition, "n_goals": n, "n_seeds": 1,
           "gap": mon - unmon, "gap_ci_low": mon - unmon - 0.1,
           "gap_ci_high": mon - unmon + 0.1, "ci_level": 0.95, "n_pairs": n}
    for tier, rate in (("monitored", mon), ("unmonitored", unmon)):
        row.update({f"{tier}_n": n, f"{tier}_compliance": rate,
                    f"{tier}_compliance_ci_low": max(rate - 0.15, 0.0),
                    f"{tier}_compliance_ci_high": min(rate + 0.15, 1.0)})
    return row


def metrics_table(models=("m1", "m2")) -> pl.DataFrame:
    rows = []
    for i, model in enumerate(models):
        rows.append(_metrics_row(model, "baseline", 0.6 - 0.1 * i, 0.5 - 0.1 * i))
        rows.append(_metrics_row(model, "prompt-A1_amp-standard", 0.9, 0.1))  # ignored
        for j, vec in enumerate(FITTED + RANDOM):
            for m in MULTS:
                shift = 0.05 * m * (1 if vec.startswith("expectations") else 0.2) + 0.01 * j
                rows.append(_metrics_row(model, steer_condition(vec, m), 0.6 + shift,
                                         0.5 + shift))
    return pl.DataFrame(rows)


def judge_table(models=("m1", "m2")) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    conds = ["baseline"] + [steer_condition(v, m) for v in FITTED + RANDOM for m in MULTS]
    for model in models:
        for cond in conds:
            for tier in ("monitored", "unmonitored"):
                for goal in range(4):
                    a, b = rng.uniform(0, 4, 2)
                    status = "ok" if goal < 3 else "unparsed"
                    if status == "unparsed":
                        a = b = np.nan
                    rows.append({"model": model, "condition": cond, "goal_id": goal,
                                 "tier": tier, "seed": 0, "status": status, "a_score": a,
                                 "b_score": b})
    return pl.DataFrame(rows)


def summary_table() -> pl.DataFrame:
    return steering_summary(metrics_table(), judge_table(), high=HIGH)


# ----------------------------------------------------------------------------- steering_summary


def test_summary_columns_and_baseline_rows_for_every_vector():
    s = summary_table()
    assert list(s.columns) == SUMMARY_COLUMNS
    vectors = FITTED + RANDOM
    # (2 multipliers + baseline) x 2 tiers per vector and model; prompt rows are ignored
    assert len(s) == 2 * len(vectors) * (len(MULTS) + 1) * 2
    assert not s["condition"].str.starts_with("prompt-").any()
    for model, base_mon in (("m1", 0.6), ("m2", 0.5)):
        zero = s.filter(pl.col("model") == model, pl.col("multiplier") == 0.0)
        assert set(zero["vector"].to_list()) == set(vectors)
        assert (zero["condition"] == "baseline").all()
        mon = zero.filter(pl.col("tier") == "monitored")
        assert np.allclose(mon["compliance"].to_numpy(), base_mon)
        assert np.allclose(mon["gap"].to_numpy(), 0.1)
    assert s["multiplier"].dtype == pl.Float64
    assert set(s["multiplier"].to_list()) == {-4.0, 0.0, 4.0}
    counts = ("n", "judged", "a_scored", "b_scored")
    assert all(s[c].dtype == pl.Int64 for c in counts)  # counts stay integers


def test_summary_kinds_sources_and_order():
    s = summary_table()
    rnd = s.filter(pl.col("vector") == "random_expectations_ooc_2")
    assert (rnd["kind"] == "random").all() and (rnd["of"] == "expectations_ooc").all()
    assert (rnd["concept"] == "expectations").all() and (rnd["source"] == "ooc").all()
    fit = s.filter(pl.col("vector") == "consequences_ic")
    assert (fit["kind"] == "fitted").all() and (fit["of"] == "consequences_ic").all()
    m1 = s.filter(pl.col("model") == "m1")
    order = list(dict.fromkeys(m1["vector"].to_list()))
    # grouped by the fitted vector a row belongs to: fitted first, then its random controls
    assert order == ["expectations_ooc", "random_expectations_ooc_1",
                     "random_expectations_ooc_2", "expectations_ic", "consequences_ooc",
                     "consequences_ic", "random_consequences_ic_1"]
    one = m1.filter(pl.col("vector") == "expectations_ooc")
    assert one["multiplier"].to_list() == [-4.0, -4.0, 0.0, 0.0, 4.0, 4.0]
    assert one["tier"].to_list() == ["monitored", "unmonitored"] * 3
    # deterministic whatever the input order
    metrics = metrics_table().sample(fraction=1.0, shuffle=True, seed=3)
    judge = judge_table().sample(fraction=1.0, shuffle=True, seed=4)
    assert not metrics.equals(metrics_table()) and not judge.equals(judge_table())
    shuffled = steering_summary(metrics, judge, high=HIGH)
    assert_frame_equal(shuffled, s)


def test_summary_judge_shares_with_threshold():
    cond = steer_condition("expectations_ooc", 4)
    metrics = pl.DataFrame([_metrics_row("m1", "baseline", 0.5, 0.4),
                            _metrics_row("m1", cond, 0.7, 0.6)])
    judge = pl.DataFrame({
        "model": ["m1"] * 6, "condition": [cond] * 6, "tier": ["monitored"] * 6,
        "goal_id": list(range(6)), "seed": [0] * 6,
        "status": ["ok", "ok", "partial", "ok", "unparsed", "no_scratchpad"],
        "a_score": [0.0, 1.0, 2.0, 3.5, np.nan, None],  # NaN and null: both unscored
        "b_score": [4.0, 1.9, np.nan, 2.0, None, np.nan]})
    s = steering_summary(metrics, judge, high=HIGH)
    r = s.filter(pl.col("condition") == cond, pl.col("tier") == "monitored").row(0, named=True)
    assert r["judged"] == 4
    assert (r["a_scored"], r["b_scored"]) == (4, 3)
    assert r["a_mean"] == pytest.approx(6.5 / 4)
    assert r["b_mean"] == pytest.approx(7.9 / 3)
    assert r["a_share"] == pytest.approx(0.5)        # 2.0 and 3.5 are >= 2
    assert r["b_share"] == pytest.approx(2 / 3)      # 4.0 and 2.0 are >= 2, 1.9 is not
    assert r["high"] == HIGH and r["ci_level"] == 0.95
    assert r["compliance"] == 0.7 and r["n"] == 20
    # no judge rows for the other tier / the baseline: zero counts, NaN scores
    other = s.filter(pl.col("condition") == cond,
                     pl.col("tier") == "unmonitored").row(0, named=True)
    assert other["judged"] == 0 and math.isnan(other["a_mean"]) and math.isnan(other["b_share"])
    assert (s["condition"] == "baseline").sum() == 2


def test_summary_without_judge_and_explicit_zero_multiplier():
    metrics = pl.DataFrame([_metrics_row("m1", "baseline", 0.5, 0.4),
                            _metrics_row("m1", steer_condition("expectations_ooc", 0), 0.55,
                                         0.45),
                            _metrics_row("m1", steer_condition("expectations_ooc", -2), 0.3,
                                         0.2)])
    s = steering_summary(metrics, pl.DataFrame(), high=HIGH)
    zero = s.filter(pl.col("multiplier") == 0.0)
    assert zero["condition"].to_list() == ["steer-expectations_ooc-x+0"] * 2  # replaces baseline
    assert (s["judged"] == 0).all() and s["a_share"].is_nan().all()


def test_summary_errors_and_empty():
    with pytest.raises(ValueError, match="gap_ci_low"):
        steering_summary(metrics_table().drop("gap_ci_low"), judge_table(), high=HIGH)
    with pytest.raises(ValueError, match="b_score"):
        steering_summary(metrics_table(), judge_table().drop("b_score"), high=HIGH)
    only_base = pl.DataFrame([_metrics_row("m1", "baseline", 0.5, 0.4)])
    empty = steering_summary(only_base, judge_table(), high=HIGH)
    assert empty.is_empty() and list(empty.columns) == SUMMARY_COLUMNS
    assert empty.schema == summary_table().schema  # typed, no all-null columns


# ----------------------------------------------------------------------------- Wilson, raw


def test_wilson_interval_known_values():
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-5)
    for k, n, level in ((3, 17, 0.95), (40, 52, 0.9), (1, 520, 0.99)):
        assert wilson_interval(k, n, level) == pytest.approx(wilson_ci(k, n, level), abs=1e-9)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def raw_judge_table(models=("m1", "m2")) -> pl.DataFrame:
    rows = []
    conds = {raw_condition(): [True] * 2 + [False] * 7 + [None],
             raw_condition("expectations_ooc", 4): [True] * 3 + [False] * 7,
             raw_condition("consequences_ic", 4): [True] + [False] * 8 + [None],
             raw_condition("expectations_ooc", -4): [False] * 10}
    for model in models:
        for cond, verdicts in conds.items():
            for g, v in enumerate(verdicts):
                rows.append({"model": model, "condition": cond, "goal_id": g, "tier": "raw",
                             "seed": 0, "complied": v,
                             "status": "ok" if v is not None else "unparsed"})
    df = pl.DataFrame(rows, infer_schema_length=None)
    assert df["complied"].dtype == pl.Boolean
    return df


def test_raw_summary():
    r = raw_summary(raw_judge_table(), level=0.95)
    assert list(r.columns) == RAW_COLUMNS
    m1 = r.filter(pl.col("model") == "m1")
    assert m1["condition"].to_list() == ["raw-baseline", "raw-expectations_ooc-x-4",
                                         "raw-expectations_ooc-x+4", "raw-consequences_ic-x+4"]
    base = m1.row(0, named=True)
    assert base["vector"] is None and base["multiplier"] == 0.0
    assert (base["n"], base["judged"], base["unparsed"]) == (10, 9, 1)
    assert base["complied"] == pytest.approx(2 / 9)
    assert (base["ci_low"], base["ci_high"]) == pytest.approx(wilson_interval(2, 9, 0.95))
    plus = m1.filter(pl.col("condition") == "raw-expectations_ooc-x+4").row(0, named=True)
    assert (plus["vector"], plus["concept"], plus["source"], plus["kind"]) == (
        "expectations_ooc", "expectations", "ooc", "fitted")
    assert plus["multiplier"] == 4.0 and plus["complied"] == pytest.approx(0.3)
    assert all(r[c].dtype == pl.Int64 for c in ("n", "judged", "unparsed"))
    # a tie / unparsed status with a stray verdict is not judged; strings and 0/1 are read
    odd = pl.DataFrame({"model": ["m1"] * 3, "condition": ["raw-baseline"] * 3,
                        "goal_id": [0, 1, 2], "seed": [0] * 3, "status": ["ok", "tie", "ok"],
                        "complied": ["True", "yes", "false"]})
    for table in (odd, odd.with_columns(complied=pl.Series([1, 1, 0]))):
        o = raw_summary(table).row(0, named=True)
        assert (o["judged"], o["unparsed"], o["complied"]) == (2, 1, 0.5)
    empty = raw_summary(raw_judge_table().head(0))
    assert empty.is_empty() and empty.schema == r.schema  # typed, no all-null columns


def test_raw_summary_errors():
    with pytest.raises(ValueError, match="not a raw condition"):
        raw_summary(pl.DataFrame({"model": ["m1"], "condition": ["baseline"], "goal_id": [0],
                                  "seed": [0], "status": ["ok"], "complied": [True]}))
    with pytest.raises(ValueError, match="complied"):
        raw_summary(raw_judge_table().drop("complied"))


# ----------------------------------------------------------------------------- figures


def token_table(models=("m1", "m2"), n_tokens=(100, 12)) -> pl.DataFrame:
    rng = np.random.default_rng(2)
    tricky = ["$", "_x", "$x_1$", "\n", " ", "", "\u0120the", "^{", "\\", "%", "a$b", "<tag>"]
    vectors = FITTED + RANDOM + ["not_a_vector"]
    rows = []
    for model in models:
        for t, n in enumerate(n_tokens):
            for pos in range(n):
                token = tricky[pos % len(tricky)] if pos < 24 else f"tok{pos}"
                for v in vectors:
                    rows.append({"model": model, "transcript": t, "position": pos,
                                 "token": token, "vector": v,
                                 "cosine": float(rng.normal(0, 0.05))})
    return pl.DataFrame(rows)


def alignment_table(models=("m1", "m2")) -> pl.DataFrame:
    rows = []
    for model in models:
        for branch in ("A1_amp", "B1_sup", "noise"):
            for v in FITTED[:2] + RANDOM[:1]:
                for layer in range(6):
                    c = 0.02 * layer if branch == "A1_amp" else -0.01
                    rows.append({"model": model, "branch": branch, "vector": v,
                                 "layer": layer, "cosine": c, "ci_low": c - 0.02,
                                 "ci_high": c + 0.02, "n_texts": 16, "diff_norm": 1.0})
    return pl.DataFrame(rows)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def _draw(fn, df, tmp_path, name="fig"):
    outs = [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    fn(df, NAMES, outs, dpi=50)
    for out in outs:
        assert out.exists() and out.stat().st_size > 500
    assert outs[1].read_bytes()[:5] == b"%PDF-"
    w, h = _png_size(outs[0])
    assert 150 < w < 8000 and 100 < h < 8000


TABLES = {
    "steering_ooc": summary_table,
    "steering_ic": summary_table,
    "steering_random": summary_table,
    "token_heatmap_expectations": token_table,
    "token_heatmap_consequences": token_table,
    "steering_raw": lambda: raw_summary(raw_judge_table()),
    "sdf_steering_alignment": alignment_table,
}
NEEDED = {
    "steering_ooc": "a_share", "steering_ic": "compliance", "steering_random": "multiplier",
    "token_heatmap_expectations": "cosine", "token_heatmap_consequences": "token",
    "steering_raw": "ci_high", "sdf_steering_alignment": "branch",
}


@pytest.mark.parametrize("fn", sorted(TABLES))
def test_figure_writes_png_and_pdf(tmp_path, fn):
    _draw(_figure(fn), TABLES[fn](), tmp_path)


def test_figures_single_model_and_partial_inputs(tmp_path):
    s = summary_table()
    # one column missing
    one = s.filter(pl.col("model") == "m2", pl.col("vector") != "consequences_ooc")
    _draw(fs.steering_ooc, one, tmp_path, "ooc")
    for missing in (np.nan, None):
        nan_judge = s.with_columns(a_share=pl.lit(missing, pl.Float64),
                                   b_share=pl.lit(missing, pl.Float64), judged=pl.lit(0),
                                   a_scored=pl.lit(0), b_scored=pl.lit(0))
        _draw(fs.steering_ic, nan_judge, tmp_path, "ic")
    # random controls whose fitted vector is absent
    no_fitted = s.filter(pl.col("kind") == "random")
    _draw(fs.steering_random, no_fitted, tmp_path, "random")
    raw = raw_summary(raw_judge_table(("m1",)))
    _draw(fs.steering_raw, raw.filter(pl.col("vector").is_not_null()), tmp_path,
          "raw")  # no baseline
    # per-model tables concatenated by name, the second without ``unparsed`` (null there)
    both = pl.concat([raw, raw_summary(raw_judge_table(("m2",))).drop("unparsed")],
                     how="diagonal_relaxed")
    _draw(fs.steering_raw, both, tmp_path, "raw2")
    _draw(fsa.token_heatmap_consequences, token_table(("m1",), (5,)), tmp_path, "heat")
    tokens = token_table(("m1",), (30,)).with_columns(  # null cosines, one position all null
        cosine=pl.when((pl.col("position") == 3) | (pl.col("vector") == "consequences_ic"))
        .then(None).otherwise(pl.col("cosine")))
    _draw(fsa.token_heatmap_consequences, tokens, tmp_path, "heat_null")


@pytest.mark.parametrize("fn", sorted(TABLES))
def test_figure_missing_column_raises(tmp_path, fn):
    df = TABLES[fn]().drop(NEEDED[fn])
    with pytest.raises(ValueError, match=NEEDED[fn]):
        _figure(fn)(df, NAMES, [tmp_path / "x.png"])
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("fn", sorted(TABLES))
def test_figure_empty_raises(tmp_path, fn):
    with pytest.raises(ValueError, match="empty"):
        _figure(fn)(pl.DataFrame(), NAMES, [tmp_path / "x.png"])


def test_figures_raise_when_nothing_to_draw(tmp_path):
    s = summary_table()
    with pytest.raises(ValueError, match="no fitted ic vectors"):
        fs.steering_ic(s.filter(pl.col("source") == "ooc"), NAMES, [tmp_path / "x.png"])
    with pytest.raises(ValueError, match="no random-control rows"):
        fs.steering_random(s.filter(pl.col("kind") == "fitted"), NAMES, [tmp_path / "x.png"])
    tokens = token_table(("m1",), (5,))
    with pytest.raises(ValueError, match="no consequences vectors"):
        fsa.token_heatmap_consequences(
            tokens.filter(pl.col("vector").str.contains("expectations")), NAMES,
            [tmp_path / "x.png"])
    align = alignment_table(("m1",))
    with pytest.raises(ValueError, match="no fitted vectors"):
        fsa.sdf_steering_alignment(align.filter(pl.col("vector").str.starts_with("random")),
                                   NAMES, [tmp_path / "x.png"])
    assert not (tmp_path / "x.png").exists()


def test_token_window_and_tick_text():
    values = np.zeros((2, 100))
    values[0, 50:60] = 1.0
    start = fsa._window(values, np.array([True, False]), 64)
    assert start <= 50 and start + 64 >= 60
    assert fsa._window(values[:, :30], np.array([True, False]), 64) == 0
    assert fsa._tick_text("$x_1$") == r"\$x_1\$"
    assert fsa._tick_text("\n") == "\\n"
    assert fsa._tick_text("") == "''" and fsa._tick_text("  ") == "\u00b7\u00b7"
    assert fsa._tick_text("\u0120the") == " the"
    assert len(fsa._tick_text("x" * 40)) == 14


def test_steering_diagnostics_figure(tmp_path):
    rows = []
    for vec in ("expectations_ooc", "consequences_ooc", "random_expectations_ooc_1"):
        for split in ("cv", "validation", "keyword_hard"):
            if vec.startswith("random_") and split == "cv":
                continue
            for layer in range(4):
                rows.append({"model": "m", "vector": vec, "layer": layer, "split": split,
                             "auroc": 0.5 + 0.1 * layer, "paired_accuracy": 0.6,
                             "n_pairs": 5})
    outs = [tmp_path / "d.png", tmp_path / "d.pdf"]
    fs.steering_diagnostics(pl.DataFrame(rows), {"m": "M"}, outs, dpi=60)
    assert all(o.stat().st_size > 0 for o in outs)
    with pytest.raises(ValueError, match="steering_diagnostics"):
        fs.steering_diagnostics(pl.DataFrame(rows).drop("auroc"), {}, outs)
