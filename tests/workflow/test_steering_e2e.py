"""The steering stage of the DAG on the tiny random Llama (the shared ``tiny_full_dag`` run):
pairs -> activation shards -> fitted and random vectors with diagnostics -> selected layers ->
steered, random-control and raw rollouts -> judge -> summaries and figures; then partial reruns.

A random-weight model writes no usable dialogue and no parseable judge score, so the pairs come
in through ``steering.external_pairs`` (hand-written in tests/steering_pairs.py, through the
same filters as generated ones); everything after the pairs is the real code path."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
from conftest import (
    REPO,
    assert_table_jobs_load_no_model_library,
    job_counts,
    run_snakemake,
)
from safetensors.numpy import load_file

from motivation_profiles.core.provenance import read_provenance
from motivation_profiles.steering.names import random_name


@pytest.mark.slow
def test_tiny_steering_end_to_end(tiny_full_dag):
    tmp_path, cfg = tiny_full_dag.work, tiny_full_dag.config
    res = tiny_full_dag.results
    # steering tables and figures (summaries, layer choice, vectors, heatmaps) load no torch
    assert assert_table_jobs_load_no_model_library(res) >= 10

    # pairs and their activation caches: one shard set + index per pair set
    train = pd.read_parquet(res / "pairs/tiny/ooc_expectations_train.parquet")
    assert len(train) == 3 and set(train["split"]) == {"train"}
    act = res / "activations/tiny/ooc_expectations_train"
    index = pd.read_parquet(act / "index.parquet")
    assert len(index) == 2 * 3 and set(index["side"]) == {"pos", "neg"}
    assert (index["span_tokens"] > 0).all()
    assert (index["response_tokens"] > index["span_tokens"]).all()
    assert json.loads((act / "meta.json").read_text())["max_batch_tokens"] == 512
    shard = load_file(str(act / "shard_00000.safetensors"))
    assert shard["response_mean"].shape == (6, 2, 64) and np.isfinite(shard["span_mean"]).all()

    # fitted vectors [layers, d] with diagnostics on every split; random controls norm-matched
    vec = load_file(str(res / "vectors/tiny/expectations_ooc.safetensors"))["vectors"]
    assert vec.shape == (2, 64) and np.isfinite(vec).all() and (np.abs(vec) > 0).any()
    diag = pd.read_parquet(res / "vectors/tiny/expectations_ooc.diagnostics.parquet")
    assert {"validation", "keyword_hard"} <= set(diag["split"])
    assert set(diag["layer"]) == {0, 1}
    rnd = load_file(str(res / "vectors/tiny/random/expectations_ooc_1.safetensors"))["vectors"]
    np.testing.assert_allclose(np.linalg.norm(rnd, axis=1), np.linalg.norm(vec, axis=1),
                               rtol=1e-5)
    layers = pd.read_parquet(res / "vectors/tiny/layers.parquet")
    assert int(layers["selected"].sum()) == 1                       # steering.layers.k = 1
    # every vector's per-layer norm, the steered layers marked (the figures' caption line)
    norms = pd.read_parquet(res / "vectors/tiny/norms.parquet")
    fitted = norms[norms["vector"] == "expectations_ooc"].sort_values("layer")
    np.testing.assert_allclose(fitted["norm"], np.linalg.norm(vec, axis=1), rtol=1e-5)
    assert list(fitted["steered"]) == list(layers.sort_values("layer")["selected"])
    assert set(norms["kind"]) == {"fitted", "random"}
    # the controls of the two concepts are independent draws, not one vector rescaled
    other = load_file(str(res / "vectors/tiny/random/consequences_ooc_1.safetensors"))["vectors"]
    cos = (rnd * other).sum(axis=1) / (np.linalg.norm(rnd, axis=1) * np.linalg.norm(other, axis=1))
    assert np.abs(cos).max() < 0.9

    # steered rollouts carry what steered them; the raw control has no AF framing
    steered = pd.read_parquet(res / "rollouts/tiny/steer-expectations_ooc-x+4.parquet")
    assert set(steered["steering_vector"]) == {"expectations_ooc"}
    assert set(steered["steering_multiplier"]) == {4.0}
    chosen = ",".join(map(str, layers.loc[layers["selected"], "layer"].sort_values()))
    assert set(steered["steering_layers"]) == {chosen}
    base = pd.read_parquet(res / "rollouts/tiny/baseline.parquet")
    assert len(steered) == len(base)
    raw = pd.read_parquet(res / "rollouts/tiny/raw-baseline.parquet")
    # the steered, raw and baseline rollouts all run on the organism; so do the activations
    for table in (steered, base, raw):
        assert set(table["adapter"]) == {"af_organism"}
    assert "results/lora/tiny/af_organism" in read_provenance(act / "index.parquet")["inputs"]
    assert set(raw["tier"]) == {"raw"}
    assert len(raw) == 3 and set(raw["seed"]) == {0}  # steering.raw.seeds: one per goal
    assert len(pd.read_parquet(res / "judge/tiny/raw-baseline.parquet")) == len(raw)
    summary = pd.read_parquet(res / "steering/tiny/summary.parquet")
    assert {"expectations_ooc", random_name("consequences", "ooc", 1)} <= set(summary["vector"])
    inputs = read_provenance(res / "vectors/tiny/expectations_ooc.diagnostics.parquet")["inputs"]
    assert "results/activations/tiny/ooc_expectations_train" in inputs
    for fig in ("steering_diagnostics", "steering_ooc", "steering_ic", "steering_random",
                "steering_raw", "token_heatmap_expectations", "token_heatmap_consequences"):
        assert (res / f"figures/{fig}.png").stat().st_size > 0, fig

    # Every table says which rule, config and inputs made it (activation indexes included).
    for path in res.rglob("*.parquet"):
        if any(part.startswith(".") for part in path.parts):
            continue  # a resumable job's .partial directory
        prov = read_provenance(path)
        assert prov["rule"] and prov["config_hash"] and prov["package_version"], path
        assert prov["inputs"], path

    # One HTML report holds every figure with its caption (workflow/report/*.rst).
    run_snakemake(tmp_path, cfg, "--report", "report.html")
    html = (tmp_path / "report.html").read_text()
    for fig in ("steering_ooc", "steering_random", "token_heatmap_expectations",
                "baseline_compliance"):
        assert f"{fig}.png" in html, fig
    assert "Choices not in the paper" in html and "departures.html" in html
    phrase = "One column per fitted OOC vector"
    assert phrase in (REPO / "workflow" / "report" / "steering_ooc.rst").read_text()
    assert phrase in " ".join(html.split())

    # Changing the layer list re-steers; pairs, activations and vectors stay.
    relayer = copy.deepcopy(cfg)
    relayer["steering"]["layers"].update(select="list", list=[0 if chosen == "1" else 1])
    dry = run_snakemake(tmp_path, relayer, "-n")
    counts = job_counts(dry.stdout + dry.stderr)
    for rule in ("ooc_pairs", "ic_pairs", "activations", "fit_vectors", "random_vectors"):
        assert rule not in counts, (rule, counts)
    assert counts["steering_layers"] == 1
    assert counts["rollouts"] == 8 + 4 + 2          # fitted x2, random x2, raw vector x2
