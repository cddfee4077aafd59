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
