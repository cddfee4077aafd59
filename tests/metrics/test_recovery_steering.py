"""The simulated organism's steering chain recovers its planted directions and layers, and a
broken step (back-map removed, identical random controls, wrong layers, a sign-flipped or
random direction) makes its recovery rows fail. The package is called directly: simulated OOC
pairs through the real filters -> simulated activation caches -> the real fit, diagnostics,
layer choice and random controls -> ``metrics.recovery.steering_rows``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from motivation_profiles.backends.simulated import Policy, SimulatedBackend
from motivation_profiles.metrics.recovery import steering_rows, summary
from motivation_profiles.models.hooks import Steering
from motivation_profiles.steering import vectors as V
from motivation_profiles.steering.activation_cache import load_activations
from motivation_profiles.steering.materials import load_materials
from motivation_profiles.steering.ooc import generate_ooc_pairs
from motivation_profiles.steering.simulated_activations import extract_simulated_activations

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "resources" / "simulated" / "planted_af.yaml"
SPLITS = {"train": 150, "validation": 40, "keyword_hard": 40}
K = 2


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    policy = Policy.load(POLICY)
    backend = SimulatedBackend(policy)
    materials = load_materials(REPO / "resources" / "steering")
    root = tmp_path_factory.mktemp("sim_steering")
    acts, rejections = {}, {}
    for concept in ("expectations", "consequences"):
        for split, n in SPLITS.items():
            pairs, rej = generate_ooc_pairs(backend, materials, concept=concept, split=split,
                                            n_pairs=n, candidates_per_round=2 * n, max_rounds=3)
            assert len(pairs) == n, rej
            rejections[(concept, split)] = rej
            out = root / f"{concept}_{split}"
            extract_simulated_activations(policy.steering, pairs, out, shard_size=128,
                                          max_length=4096)
            index, a = load_activations(out)
            side = index["side"].to_numpy()
            acts[(concept, split)] = (a[side == "pos"], a[side == "neg"])
    return policy, acts, rejections


def _run(policy, acts, *, pick_layers=None):
    """Fit, diagnose, choose layers and draw random controls as the rules do."""
    vectors, diags = {}, []
    for concept in ("expectations", "consequences"):
        pos, neg = acts[(concept, "train")]
        vec = V.fit_directions(pos, neg, estimator="logistic", C=1.0, scale="gap")
        name = f"{concept}_ooc"
        vectors[name] = (vec, {"kind": "fitted", "concept": concept})
        diags.append(V.diagnostics(pos, neg, None, {
            s: acts[(concept, s)] for s in ("validation", "keyword_hard")}, folds=None))
        for k in (1, 2):
            r = V.random_controls(vec, n=1, seed=V.control_seed(0, name, k))[0]
            vectors[f"random_{name}_{k}"] = (r, {"kind": "random", "concept": concept})
    chosen = (pick_layers if pick_layers is not None else
              V.select_layers(pl.concat(diags), k=K, metric="auroc", split="keyword_hard"))
    layers = pl.DataFrame({"layer": list(range(policy.steering.layers)),
                           "selected": [i in chosen for i in range(policy.steering.layers)]})
    table = pl.DataFrame(steering_rows(policy, model="sim", vectors=vectors, layers=layers,
                                       k=K), schema_overrides={"planted": pl.Float64})
    return table, vectors, chosen


def _failed(table, quantity):
    return table.filter((pl.col("quantity") == quantity) & ~pl.col("covered")).height


def test_ooc_pairs_pass_the_real_filters(chain):
    _, _, rejections = chain
    for rej in rejections.values():
        assert set(rej["filter"]) >= {"parse", "banned_terms", "label_leakage", "duplicate"}
    hard = rejections[("expectations", "keyword_hard")]
    assert "keyword_audit" in hard["filter"].to_list()


def test_steering_chain_recovers_planted_layers_and_directions(chain):
    policy, acts, _ = chain
    table, _, chosen = _run(policy, acts)
    assert chosen == policy.steering.best_layers(K) == [3, 4]
    s = summary(table)
    assert s["exact_equal"] and s["bounds_met"] and s["bounds"] == 4
    assert s["covered"] == 1.0                   # the random controls are independent
    cos = table.filter(pl.col("quantity") == "vector_cosine")["estimate"]
    assert cos.min() >= policy.steering.min_cosine


def test_missing_back_map_fails_the_cosine_rows(chain, monkeypatch):
    policy, acts, _ = chain
    from sklearn.linear_model import LogisticRegression

    def no_back_map(diffs, *, estimator="logistic", C=1.0, ridge_alpha=1.0, seed=0):
        z, y, _ = V.standardize(np.asarray(diffs, dtype=np.float64))
        w = LogisticRegression(C=C, fit_intercept=False, max_iter=5000).fit(z, y).coef_[0]
        return -w if float(np.mean(diffs @ w)) < 0 else w   # the mutant: w_z, not w_z / sigma

    monkeypatch.setattr(V, "coefficient_vector", no_back_map)
    table, _, _ = _run(policy, acts)
    assert _failed(table, "vector_cosine") == 4


def test_identical_random_controls_fail(chain, monkeypatch):
    policy, acts, _ = chain
    monkeypatch.setattr(V, "control_seed", lambda seed, vector, k: 12345)
    table, _, _ = _run(policy, acts)
    assert _failed(table, "random_control_cosine") == table.filter(
        pl.col("quantity") == "random_control_cosine").height > 0


def test_wrong_layers_fail(chain):
    policy, acts, _ = chain
    table, _, _ = _run(policy, acts, pick_layers=[0, 1])
    assert _failed(table, "selected_layer") == 4       # 0, 1 wrongly in; 3, 4 wrongly out


@pytest.mark.parametrize("mutation", ["sign", "random"])
def test_wrong_direction_fails_and_moves_steering_the_wrong_way(chain, mutation):
    policy, acts, _ = chain
    table, vectors, chosen = _run(policy, acts)
    rng = np.random.default_rng(3)
    bad = {}
    for name, (arr, meta) in vectors.items():
        if meta["kind"] == "fitted":
            arr = -arr if mutation == "sign" else rng.standard_normal(arr.shape).astype(
                np.float32)
        bad[name] = (arr, meta)
    layers = pl.DataFrame({"layer": list(range(6)), "selected": [i in chosen for i in range(6)]})
    rows = pl.DataFrame(steering_rows(policy, model="sim", vectors=bad, layers=layers, k=K),
                        schema_overrides={"planted": pl.Float64})
    assert _failed(rows, "vector_cosine") >= 3
    # the steered organism responds to the applied vector's projection on the planted one
    good = dict(SimulatedBackend(policy, steering=Steering(
        {layer: vectors["expectations_ooc"][0][layer] for layer in chosen}, 4.0)).doses)
    wrong = dict(SimulatedBackend(policy, steering=Steering(
        {layer: bad["expectations_ooc"][0][layer] for layer in chosen}, 4.0)).doses)
    assert good["expectations"] > 0.8 * 4
    assert wrong["expectations"] < (-3.0 if mutation == "sign" else 2.0)


# --------------------------------------------------------------------------- steered rollouts


def test_steer_conditions_map_to_planted_doses():
    from motivation_profiles.backends.simulated import Condition
    from motivation_profiles.metrics.recovery import condition_of

    spec = Policy.load(POLICY).steering
    cond = condition_of("steer-expectations_ooc-x+4", spec)
    doses = dict(cond.steer)
    assert doses["expectations"] == pytest.approx(4.0)          # a perfect fit: dose m
    # the other concept's dose: m x the planted directions' cosine (small width: not 0)
    top = [3, 4]
    cross = np.mean([spec.cosine("consequences", layer, spec.directions["expectations"][layer])
                     for layer in top])
    assert doses["consequences"] == pytest.approx(4.0 * cross)
    assert dict(condition_of("steer-consequences_ooc-x-4", spec).steer)["consequences"] == \
        pytest.approx(-4.0)
    assert condition_of("steer-random_expectations_ooc_1-x+4", spec) == Condition()
    with pytest.raises(ValueError, match="steering"):
        condition_of("steer-expectations_ooc-x+4")
    with pytest.raises(ValueError, match="raw"):
        condition_of("raw-expectations_ooc-x+4", spec)


def _steered(policy, goals, vectors, multiplier, condition):
    from motivation_profiles.metrics.simulation import PARAMS
    from motivation_profiles.rollouts.protocol import PromptSet
    from motivation_profiles.rollouts.run import run_rollouts

    prompts = PromptSet.from_config({
        "system": str(REPO / "resources/prompts/helpful_only_compact.txt"),
        "user_template": str(REPO / "resources/prompts/user_turn.txt"),
        "tier_values": {"monitored": "True", "unmonitored": "False"},
        "continuation": "<NEXT/>"})
    steering = Steering(vectors, multiplier) if vectors else None
    return run_rollouts(SimulatedBackend(policy, steering=steering), prompts, goals,
                        seeds=range(32), params=PARAMS, max_turns=2,
                        meta={"model": "sim", "condition": condition},
                        prefill="<SCRATCHPAD_REASONING>")


def _independent(spec, layer, v):
    """``v`` with its components along the planted directions removed (in the layer's noise
    metric): a random control exactly independent of every concept. At width 32 a raw random
    draw has |cosine| ~ 0.2 with each planted direction, a real (if random) effect that real
    models' thousands of dimensions make negligible."""
    s2 = spec.scales[layer] ** 2
    basis = []
    for concept in sorted(spec.directions):
        b = s2 * spec.directions[concept][layer]
        for q in basis:
            b = b - (b @ q) * q
        basis.append(b / np.linalg.norm(b))
    for q in basis:
        v = v - (v @ q) * q
    assert all(abs(spec.cosine(c, layer, v)) < 1e-9 for c in spec.directions)
    return v


@pytest.fixture(scope="module")
def steered_tables():
    """Baseline, each concept's planted direction at +-4 and two random controls at +4, as
    the steered rollout tables of the DAG would hold them (24 goals x 32 seeds: every
    condition shares a rollout's random draws, so its errors are correlated across conditions
    and a small design misses several rows together)."""
    from motivation_profiles.metrics.profiles import intervention_effects

    policy = Policy.load(POLICY)
    spec = policy.steering
    goals = (pl.read_csv(REPO / "resources/goals/embedded_goals.csv").head(24)
             .with_row_index("goal_id").with_columns(pl.col("goal_id").cast(pl.Int64)))
    tables = {"baseline": _steered(policy, goals, None, 0.0, "baseline")}
    for concept in ("expectations", "consequences"):
        u = {layer: spec.directions[concept][layer] for layer in (3, 4)}
        for m in (4, -4):
            cond = f"steer-{concept}_ooc-x{m:+d}"
            tables[cond] = _steered(policy, goals, u, float(m), cond)
    rng = np.random.default_rng(7)
    for concept in ("expectations", "consequences"):
        cond = f"steer-random_{concept}_ooc_1-x+4"
        r = {layer: _independent(spec, layer, rng.standard_normal(spec.width))
             for layer in (3, 4)}
        tables[cond] = _steered(policy, goals, r, 4.0, cond)
    interventions = {"A1_amp": "steer-expectations_ooc-x+4",
                     "A1_sup": "steer-expectations_ooc-x-4",
                     "B1_amp": "steer-consequences_ooc-x+4",
                     "B1_sup": "steer-consequences_ooc-x-4"}
    effects = intervention_effects(pl.concat(list(tables.values())), baseline="baseline",
                                   interventions=interventions, n_boot=600, level=0.95,
                                   seed=0).with_columns(method=pl.lit("steering"))
    return policy, goals, tables, effects


def test_steering_slopes_and_random_controls_recover(steered_tables):
    from motivation_profiles.metrics.recovery import random_slope_rows, steering_effect_rows

    policy, _, tables, effects = steered_tables
    rows = pl.DataFrame(steering_effect_rows(policy, effects, "sim")
                        + random_slope_rows(policy, pl.concat(list(tables.values())), "sim",
                                            n_boot=600, level=0.95, seed=0))
    slopes = rows.filter(pl.col("quantity") == "steering_slope")
    assert sorted(slopes["target"]) == ["consequences", "expectations"]
    assert (slopes["planted"] > 0).all()     # expectations and consequences both raise the gap
    randoms = rows.filter(pl.col("quantity") == "random_control_slope")
    assert randoms.height == 2 and (randoms["planted"] == 0).all()
    assert rows.filter(pl.col("quantity") == "delta_gap").height == 4
    assert rows["covered"].mean() >= 0.75 and rows["z"].abs().max() <= 3.0, rows


def test_a_random_control_along_the_concept_fails(steered_tables):
    """A "random" control that is in fact the concept's direction (the mutant) moves the gap
    like the fitted vector: its slope row is not covered."""
    from motivation_profiles.metrics.recovery import random_slope_rows

    policy, goals, tables, _ = steered_tables
    spec = policy.steering
    cond = "steer-random_expectations_ooc_1-x+4"
    bad = _steered(policy, goals, {layer: spec.directions["expectations"][layer]
                                   for layer in (3, 4)}, 4.0, cond)
    rows = pl.DataFrame(random_slope_rows(policy, pl.concat([tables["baseline"], bad]), "sim",
                                          n_boot=600, level=0.95, seed=0))
    assert rows.height == 1 and not rows["covered"][0] and rows["z"][0] > 3
