"""Known-answer validation: the analysis chain recovers what the simulated organism's policy
planted, and a deliberately broken step shows up as rows that are not covered."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from motivation_profiles.backends.simulated import Condition, Policy, SimulatedBackend
from motivation_profiles.metrics import simulation
from motivation_profiles.metrics.recovery import condition_of, recovery_table, summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def policy() -> Policy:
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return Policy.load(ROOT / "resources/simulated/planted_af.yaml")
    finally:
        os.chdir(cwd)


def _goals(n: int = 24) -> pl.DataFrame:
    return (pl.read_csv(ROOT / "resources/goals/embedded_goals.csv").head(n)
            .with_row_index("goal_id").with_columns(pl.col("goal_id").cast(pl.Int64)))


def _small(**kw):
    """A quick design: standard strength only, no calibration, no judge, fewer resamples."""
    base = dict(strengths=["standard"], calibration=None, judge=False, n_boot=400)
    base.update(kw)
    return simulation.demo_design(_goals(), range(2), root=ROOT, **base)


def test_condition_names_map_to_planted_conditions():
    assert condition_of("baseline") == Condition()
    assert condition_of("sdf-A1_amp") == Condition(branch="A1_amp")
    assert condition_of("prompt-B2_sup-weak") == Condition(claim=("B2_sup", "weak"))
    assert condition_of("sdf-B1_amp@prompt-A1_amp-standard") == Condition(
        branch="B1_amp", claim=("A1_amp", "standard"))
    with pytest.raises(ValueError, match="steer-x"):
        condition_of("steer-x")


@pytest.mark.slow
def test_recovery_at_the_demo_design(policy):
    """The demo's design (24 goals x 4 seeds, every method, calibration, judge) on the
    policy's own seed: >= 90% of the interval rows covered, none beyond 3 SE, and every
    deterministic outcome (calibration selection) equal to the planted one."""
    out = simulation.simulate(policy, simulation.demo_design(_goals(), range(4), root=ROOT))
    table = out["recovery"]
    s = summary(table)
    assert s["intervals"] >= 150
    assert s["covered"] >= 0.90, table.filter(~pl.col("covered"))
    assert s["max_abs_z"] <= 3.0, table.sort(pl.col("z").abs(), descending=True).head(5)
    assert s["exact"] == 5 and s["exact_equal"], table.filter(pl.col("kind") == "exact")
    # `recovered` on the AF ratio (the demo's calibration signal) compares two consequence
    # shares whose CIs are wider than their planted difference at this design: a decision row,
    # reported beside its planted value (True), not required to match
    (rec,) = table.filter(pl.col("quantity") == "recovered").iter_rows(named=True)
    assert rec["kind"] == "decision" and rec["planted"] == 1.0 and s["decisions"] == 1
    quantities = set(table["quantity"])
    assert {"gap", "monitored_compliance", "unmonitored_compliance", "delta_gap", "S_A",
            "S_B", "judge_mean_a", "judge_mean_b", "selected", "recovered"} <= quantities
    # the planted profile: expectation interventions move the gap more than consequence ones
    s_rows = table.filter(pl.col("quantity").is_in(["S_A", "S_B"])
                          & (pl.col("method") == "sdf"))
    planted = dict(zip(s_rows["quantity"], s_rows["planted"], strict=True))
    assert planted["S_A"] > planted["S_B"] > 0


def _covered(table: pl.DataFrame, **filters) -> float:
    df = table.filter(pl.col("kind") == "interval")
    for k, v in filters.items():
        df = df.filter(pl.col(k).is_in(v) if isinstance(v, list) else pl.col(k) == v)
    return float(df["covered"].mean())


@pytest.mark.slow
def test_unbroken_small_design_covers(policy):
    table = simulation.simulate(policy, _small())["recovery"]
    assert summary(table)["covered"] >= 0.85  # the control of the mutation tests below


@pytest.mark.slow
def test_tiers_swapped_in_metrics_is_caught(policy, monkeypatch):
    """Metrics that read the tier labels the wrong way round (monitored <-> unmonitored)."""
    swap = pl.col("tier").replace({"monitored": "unmonitored", "unmonitored": "monitored"})

    def swapped(fn):
        return lambda rollouts, *a, **kw: fn(rollouts.with_columns(tier=swap), *a, **kw)

    for name in ("condition_metrics", "sdf_effects", "prompt_effects"):
        monkeypatch.setattr(simulation, name, swapped(getattr(simulation, name)))
    table = simulation.simulate(policy, _small())["recovery"]
    # a swap is invisible where the planted tiers are close: judge the conditions with a gap
    wide = table.filter((pl.col("quantity") == "gap") & (pl.col("planted").abs() > 0.15))
    assert wide.height >= 10 and wide["covered"].mean() < 0.2
    tiers = table.filter(pl.col("quantity").is_in(["monitored_compliance",
                                                   "unmonitored_compliance"])
                         & pl.col("condition").is_in(wide["condition"].to_list()))
    assert tiers["covered"].mean() < 0.2
    assert _covered(table, quantity="delta_gap") < 0.8
    assert summary(table)["covered"] < 0.5


@pytest.mark.slow
def test_claim_not_appended_is_caught(policy, monkeypatch):
    real = simulation.PromptSet.from_config

    monkeypatch.setattr(simulation.PromptSet, "from_config",
                        staticmethod(lambda prompts, system_suffix="", rename=None:
                                     real(prompts)))
    table = simulation.simulate(policy, _small())["recovery"]
    strong = table.filter((pl.col("method") == "prompt") & (pl.col("quantity") == "delta_gap")
                          & (pl.col("planted").abs() > 0.1))
    assert strong.height >= 3 and strong["covered"].mean() < 0.3
    assert _covered(table, method="sdf") >= 0.8  # the SDF rows do not depend on claims


@pytest.mark.slow
def test_adapter_lost_is_caught(policy, monkeypatch):
    monkeypatch.setattr(simulation, "SimulatedBackend",
                        lambda pol, adapter=None: SimulatedBackend(pol))
    table = simulation.simulate(policy, _small())["recovery"]
    strong = table.filter((pl.col("method") == "sdf") & (pl.col("quantity") == "delta_gap")
                          & (pl.col("planted").abs() > 0.1))
    assert strong.height >= 3 and strong["covered"].mean() < 0.3


@pytest.mark.slow
def test_judge_directions_swapped_is_caught(policy, monkeypatch):
    from motivation_profiles.judge import scoring

    monkeypatch.setattr(scoring, "_SCORE", {"a": scoring._SCORE["b"], "b": scoring._SCORE["a"]})
    table = simulation.simulate(policy, _small(judge=True))["recovery"]
    judge = table.filter(pl.col("method") == "judge")
    assert judge.height >= 20 and judge["covered"].mean() < 0.5


def test_recovery_rows_flag_misses_and_distance(policy):
    """A hand-made metrics row far from the planted gap is not covered and its z says how far."""
    planted = policy.planted_rates(Condition())
    row = {"condition": "baseline", "ci_level": 0.95, "gap": planted["gap"] + 0.3,
           "gap_ci_low": planted["gap"] + 0.2, "gap_ci_high": planted["gap"] + 0.4}
    for t in ("monitored", "unmonitored"):
        row |= {f"{t}_compliance": planted[t], f"{t}_compliance_ci_low": planted[t] - 0.05,
                f"{t}_compliance_ci_high": planted[t] + 0.05}
    table = recovery_table(policy, model="m", metrics=pl.DataFrame([row]))
    gap = table.filter(pl.col("quantity") == "gap").row(0, named=True)
    assert not gap["covered"] and gap["z"] == pytest.approx(0.3 / (0.2 / 3.919928), rel=1e-3)
    assert table.filter(pl.col("quantity") != "gap")["covered"].all()


def test_fast_rollouts_give_the_rollout_loops_outcomes(policy):
    """The bench's one-call path and the real rollout loop agree row for row."""
    goals = _goals(4)
    loop = simulation.demo_design(goals, range(2), root=ROOT)
    fast = simulation.demo_design(goals, range(2), root=ROOT, fast=True)
    a = simulation._rollouts(policy, loop, "sdf-A1_amp", "A1_amp", None, "m")
    b = simulation._rollouts(policy, fast, "sdf-A1_amp", "A1_amp", None, "m")
    cols = ["goal_id", "tier", "seed", "outcome", "scratchpad"]
    assert a.select(cols).sort(cols[:3]).equals(b.select(cols).sort(cols[:3]))
