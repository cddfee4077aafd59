"""The simulated organism's judged rollouts feed IC pairing: its AF rollouts (simulated
backend, real rollout loop), scored by the simulated judge through the real judge code, are
paired by ``steering.ic.ic_pairs``; the planted activations of those pairs give IC vectors
that point along the planted directions at the planted best layers (the bound of
``metrics.recovery.steering_rows``)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import REPO

from motivation_profiles.backends.base import SamplingParams
from motivation_profiles.backends.simulated import Policy, SimulatedJudge
from motivation_profiles.judge.scoring import Rubric, judge_rollouts
from motivation_profiles.metrics import simulation
from motivation_profiles.metrics.recovery import steering_rows
from motivation_profiles.rollouts.protocol import PromptSet
from motivation_profiles.steering import vectors as V
from motivation_profiles.steering.activation_cache import load_activations
from motivation_profiles.steering.ic import ic_pairs
from motivation_profiles.steering.simulated_activations import extract_simulated_activations


@pytest.fixture(scope="module")
def judged():
    policy = Policy.load(REPO / "resources/simulated/planted_af.yaml")
    goals = (pl.read_csv(REPO / "resources/goals/embedded_goals.csv").with_row_index("goal_id")
             .with_columns(pl.col("goal_id").cast(pl.Int64)))
    design = simulation.demo_design(goals, range(4), root=REPO, judge=False, calibration=None)
    tables = simulation.simulate(policy, design, model="sim")["rollouts"]
    rubric = Rubric.load(REPO / "resources/judge/rubric.yaml")
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=128)
    scores = pl.concat([judge_rollouts(t, SimulatedJudge(policy), rubric, samples=1,
                                       params=params, prefill="<direction_a_score>", meta={})
                        for t in tables.values()], how="diagonal_relaxed")
    rollouts = pl.concat(list(tables.values()), how="diagonal_relaxed")
    return policy, rollouts, scores, PromptSet.from_config(design.prompts)


def test_ic_vectors_of_the_simulated_organism_recover_the_planted_directions(judged, tmp_path):
    policy, rollouts, scores, prompts = judged
    spec = policy.steering
    vectors = {}
    for concept in ("expectations", "consequences"):
        pairs, report = ic_pairs(rollouts, scores, prompts, concept=concept, high=2, low=1,
                                 max_length_ratio=2.0, n_train=150, n_validation=40)
        assert pairs.height == 190, report
        out = tmp_path / concept
        extract_simulated_activations(spec, pairs, out, shard_size=512, max_length=4096)
        index, acts = load_activations(out)
        side, split = index["side"].to_numpy(), index["split"].to_numpy()
        train = split == "train"
        vec = V.fit_directions(acts[train & (side == "pos")], acts[train & (side == "neg")],
                               estimator="logistic", C=1.0, scale="gap")
        vectors[f"{concept}_ic"] = (vec, {"kind": "fitted", "concept": concept})
    best = spec.best_layers(2)
    layers = pl.DataFrame({"layer": list(range(spec.layers)),
                           "selected": [i in best for i in range(spec.layers)]})
    rows = pl.DataFrame(steering_rows(policy, model="sim", vectors=vectors, layers=layers, k=2),
                        schema_overrides={"planted": pl.Float64})
    bound = rows.filter(pl.col("quantity") == "vector_cosine")
    assert bound.height == 4 and bound["covered"].all(), bound
    # the planted per-layer strength orders the fit: the weakest layer is recovered worst
    cos = [spec.cosine("expectations", layer, vectors["expectations_ic"][0][layer])
           for layer in range(spec.layers)]
    assert int(np.argmin(cos)) == int(np.argmin(spec.layer_strength))
