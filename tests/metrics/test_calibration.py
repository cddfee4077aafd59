"""Prompt-intervention effects, the Appendix C.1 selection rule and the recovery check, on
crafted tables with hand-computed answers."""

from __future__ import annotations

import polars as pl
import pytest
from test_profiles import CASE, _get, _rollouts

from motivation_profiles.metrics.calibration import (
    SELECTION_COLUMNS,
    calibration_effects,
    checkpoint_family,
    recovered,
    select_checkpoints,
)
from motivation_profiles.metrics.profiles import intervention_effects, prompt_effects

PAIRS = ["A1_amp", "A1_sup", "B1_amp", "B1_sup"]


def _metrics(gaps: dict[str, float]) -> pl.DataFrame:
    return pl.DataFrame([{"condition": c, "gap": g, "monitored_compliance": g + 0.1}
                         for c, g in gaps.items()])


def _by_checkpoint(table: pl.DataFrame, column: str) -> dict:
    return dict(zip(table["checkpoint"], table[column], strict=True))


def test_selection_keeps_checkpoints_at_or_above_the_reference_in_both_families():
    m = _metrics({"baseline": 0.10, "sdf-A1_amp": 0.20, "sdf-A2_amp": 0.05,
                  "sdf-B1_amp": 0.10, "sdf-B2_amp": 0.00})
    t = select_checkpoints(m, model="m", reference="baseline",
                           candidates=["A1_amp", "A2_amp", "B1_amp", "B2_amp"], signal="gap",
                           max_per_family=None)
    assert t.columns == SELECTION_COLUMNS
    # equal to the reference counts ("at or above"); below does not
    assert _by_checkpoint(t, "qualifies") == {"A1_amp": True, "A2_amp": False, "B1_amp": True,
                                              "B2_amp": False}
    assert _by_checkpoint(t, "selected") == _by_checkpoint(t, "qualifies")
    assert t["model_qualifies"].all()
    assert _by_checkpoint(t, "reference_value")["A1_amp"] == pytest.approx(0.10)


def test_selection_needs_both_families_and_caps_per_family():
    only_a = _metrics({"baseline": 0.3, "sdf-A1_amp": 0.4, "sdf-A2_amp": 0.5,
                       "sdf-B1_amp": 0.1, "sdf-B2_amp": 0.2})
    t = select_checkpoints(only_a, model="m", reference="baseline",
                           candidates=["A1_amp", "A2_amp", "B1_amp", "B2_amp"], signal="gap",
                           max_per_family=None)
    assert not t["model_qualifies"].any() and not t["selected"].any()
    assert t["qualifies"].sum() == 2  # A1 and A2 qualify on their own; the model does not
    both = _metrics({"baseline": 0.0, "sdf-A1_amp": 0.4, "sdf-A2_amp": 0.5,
                     "sdf-B1_amp": 0.1, "sdf-B2_amp": 0.1})
    t = select_checkpoints(both, model="m", reference="baseline",
                           candidates=["A1_amp", "A2_amp", "B1_amp", "B2_amp"], signal="gap",
                           max_per_family=1)
    # the strongest per family; a tie is broken by name
    assert sorted(t.filter("selected")["checkpoint"]) == ["A2_amp", "B1_amp"]


def test_selection_on_monitored_signal_and_errors():
    m = _metrics({"baseline": 0.1, "sdf-A1_amp": 0.0, "sdf-B1_amp": 0.2})
    t = select_checkpoints(m, model="m", reference="baseline", candidates=["A1_amp", "B1_amp"],
                           signal="monitored", max_per_family=None)
    assert _by_checkpoint(t, "value") == pytest.approx(
        {"A1_amp": 0.1, "B1_amp": 0.3})
    with pytest.raises(ValueError, match="sdf-B2_amp"):
        select_checkpoints(m, model="m", reference="baseline", candidates=["B2_amp"],
                           signal="gap", max_per_family=None)
    with pytest.raises(ValueError, match="reference 'sdf-noise'"):
        select_checkpoints(m, model="m", reference="sdf-noise", candidates=["A1_amp"],
                           signal="gap", max_per_family=None)
    with pytest.raises(ValueError, match="signal"):
        select_checkpoints(m, model="m", reference="baseline", candidates=["A1_amp"],
                           signal="ratio", max_per_family=None)


def test_checkpoint_family():
    assert checkpoint_family("B1_amp") == "B"
    assert checkpoint_family("A2_sup-strong+self") == "A"


def _prompt_frame(checkpoint: str | None = None, *, flip: bool = False) -> pl.DataFrame:
    """CASE's numbers with prompt condition names (A and B roles swapped when ``flip``)."""
    ref = "baseline" if checkpoint is None else f"sdf-{checkpoint}"
    rows = []
    for cond, (m, u) in CASE.items():
        inter = cond.removeprefix("sdf-")
        if inter == "noise":
            name = ref
        else:
            if flip:
                inter = {"A": "B", "B": "A"}[inter[0]] + inter[1:]
            name = f"prompt-{inter}-standard"
            if checkpoint is not None:
                name = f"sdf-{checkpoint}@{name}"
        rows += _rollouts(name, m, u)
    return pl.DataFrame(rows)


def test_prompt_effects_equal_the_generic_effects_with_prompt_names():
    t = prompt_effects(_prompt_frame(), interventions=list(PAIRS) + ["A2_amp", "A2_sup",
                                                                     "B2_amp", "B2_sup"],
                       strengths=["standard"], n_boot=300, level=0.9, seed=0)
    # CASE: S_A = mean(0.5 - (-0.25), 0.25 - 0) = 0.5; S_B = mean(0 - 0, 0.25 - 0) = 0.125
    assert _get(t, "S_A", "A")["estimate"] == pytest.approx(0.5)
    assert _get(t, "S_B", "B")["estimate"] == pytest.approx(0.125)
    assert _get(t, "S_A", "A")["pairs"] == "A1,A2"
    assert set(t["method"]) == {"prompt"} and t["checkpoint"].is_null().all()
    assert t.schema["checkpoint"] == pl.Utf8
    assert set(t["baseline_condition"]) == {"baseline"}


def test_sensitivity_over_the_configured_pairs_only():
    t = prompt_effects(_prompt_frame(), interventions=PAIRS, strengths=["standard"],
                       n_boot=300, level=0.9, seed=0)
    # A1 alone: 0.5 - (-0.25) = 0.75; B1 alone: 0 - 0 = 0
    assert _get(t, "S_A", "A")["estimate"] == pytest.approx(0.75)
    assert _get(t, "S_B", "B")["estimate"] == pytest.approx(0.0)
    assert _get(t, "S_A", "A")["pairs"] == "A1"
    ci = _get(t, "S_A", "A")
    assert ci["ci_low"] <= ci["estimate"] <= ci["ci_high"]


def test_calibration_recovers_the_known_family():
    # the A-family checkpoint responds like CASE (expectation-sensitive, S_B - S_A = -0.75),
    # the B-family checkpoint with the roles swapped (consequence-sensitive, +0.75)
    df = pl.concat([_prompt_frame(), _prompt_frame("A1_amp"),
                    _prompt_frame("B1_amp", flip=True)])
    selection = pl.DataFrame({"model": "m", "checkpoint": ["A1_amp", "B1_amp", "B2_amp"],
                              "family": ["A", "B", "B"], "selected": [True, True, False]})
    t = calibration_effects(df, selection, interventions=PAIRS, strengths=["standard"],
                            n_boot=200, level=0.9, seed=0)
    assert set(t["checkpoint_family"]) == {"base", "A", "B"}
    assert set(t["checkpoint"].drop_nulls()) == {"A1_amp", "B1_amp"}
    assert t["recovered"][0] is True and t["recovered"].all()
    b = t.filter(checkpoint="B1_amp", quantity="S_B").row(0, named=True)
    assert b["estimate"] == pytest.approx(0.75)
    assert b["baseline_condition"] == "sdf-B1_amp"
    # swap the families' labels: the same numbers now contradict the construction
    swapped = selection.with_columns(family=pl.Series(["B", "A", "A"]))
    t2 = calibration_effects(df, swapped, interventions=PAIRS, strengths=["standard"],
                             n_boot=200, level=0.9, seed=0)
    assert t2["recovered"][0] is False


def test_recovery_is_undefined_without_both_families_and_false_on_ties():
    df = pl.concat([_prompt_frame(), _prompt_frame("A1_amp")])
    sel = pl.DataFrame({"model": "m", "checkpoint": ["A1_amp"], "family": ["A"],
                        "selected": [True]})
    t = calibration_effects(df, sel, interventions=PAIRS, strengths=["standard"], n_boot=100,
                            level=0.9, seed=0)
    assert t["recovered"][0] is None and t.schema["recovered"] == pl.Boolean
    none = calibration_effects(_prompt_frame(), sel.with_columns(selected=pl.lit(False)),
                               interventions=PAIRS, strengths=["standard"], n_boot=100,
                               level=0.9, seed=0)
    assert none["recovered"][0] is None and set(none["checkpoint_family"]) == {"base"}
    ties = pl.DataFrame({"model": "m", "strength": "standard",
                         "checkpoint": ["A1_amp", "A1_amp", "B1_amp", "B1_amp"],
                         "checkpoint_family": ["A", "A", "B", "B"],
                         "quantity": ["S_A", "S_B", "S_A", "S_B"], "estimate": 0.0})
    assert recovered(ties, strength="standard") is False


def test_intervention_effects_still_require_complete_pairs():
    df = _prompt_frame()
    t = intervention_effects(df, baseline="baseline",
                             interventions={"A1_amp": "prompt-A1_amp-standard"}, n_boot=100,
                             level=0.9, seed=0)
    assert "S_A" not in set(t["quantity"])
