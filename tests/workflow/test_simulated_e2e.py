"""A simulated organism through the real DAG: rollouts through the simulated backend, the
simulated judge, metrics, SDF (virtual branches) and prompt effects, the calibration
checkpoint, the steering chain on its planted activations (OOC pairs, activation caches,
fitted vectors, layer choice, random controls, steered rollouts), and the planted-recovery
table and figure."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import absolutize, load_repo_config, run_snakemake

from motivation_profiles.core.provenance import read_provenance, read_table

pytestmark = pytest.mark.slow

PAIRS = ["A1_amp", "A1_sup", "B1_amp", "B1_sup"]


def test_simulated_organism_recovers_through_the_dag(tmp_path):
    cfg = absolutize(load_repo_config())
    cfg["models"] = {m: s for m, s in cfg["models"].items() if s["source"] == "simulated"}
    (name,) = cfg["models"]
    cfg["judge"]["model"] = name
    cfg["sdf"]["generator"]["model"] = name
    cfg["sdf"]["interventions"] = PAIRS
    cfg["prompt_interventions"]["interventions"] = PAIRS
    cfg["prompt_interventions"]["strengths"] = ["standard"]
    cfg["calibration"]["candidates"] = ["A1_amp", "B1_amp"]
    cfg["hosted"]["cache_dir"] = str(tmp_path / "cache")
    cfg["steering"]["sources"] = ["ooc"]   # this test's design: OOC vectors (the demo adds IC)
    run_snakemake(tmp_path, cfg, timeout=1500)
    res = tmp_path / "results"
    table = read_table(res / f"validation/{name}/planted_recovery.parquet")
    assert read_provenance(res / f"validation/{name}/planted_recovery.parquet")["rule"] == \
        "planted_recovery"
    iv = table.filter(pl.col("kind") == "interval")
    assert iv.height >= 60 and iv["covered"].mean() >= 0.9
    assert iv["z"].abs().max() <= 3.0
    exact = table.filter(pl.col("kind") == "exact")
    assert exact.height >= 3 and exact["covered"].all()
    # the steering chain: per-concept slopes, random-control slopes and cosines, the fitted
    # vectors' cosines with the planted directions (bound) and the selected layers (exact)
    steer = table.filter(pl.col("method") == "steering")
    count = steer.group_by("quantity").len()
    assert dict(count.iter_rows()) == {"delta_gap": 4, "steering_slope": 2,
                                       "random_control_slope": 2, "random_control_cosine": 1,
                                       "vector_cosine": 4, "selected_layer": 6}
    assert set(steer.filter(pl.col("quantity") == "steering_slope")["target"]) == {
        "expectations", "consequences"}
    layers = steer.filter(pl.col("quantity") == "selected_layer")
    assert layers.filter(pl.col("estimate") == 1)["target"].sort().to_list() == ["3", "4"]
    bounds = table.filter(pl.col("kind") == "bound")
    assert bounds.height == 4 and bounds["covered"].all()
    steered = iv.filter(pl.col("condition").str.starts_with("steer-")
                        & pl.col("quantity").str.contains("gap|compliance"))
    assert steered.height == 18 + 4        # gap and per-tier compliance of 6 steered
    #                                        conditions, and the 4 fitted arms' delta gaps
    assert read_provenance(res / f"activations/{name}/ooc_expectations_train/index.parquet")[
        "rule"] == "activations"
    assert read_table(res / f"pairs/{name}/ooc_expectations_train.parquet").height == 150
    assert not (res / f"steering/{name}/raw.parquet").exists()   # no raw control: no weights
    judged = read_table(res / f"judge/{name}/baseline.parquet")
    assert set(judged["judge_backend"]) == {"simulated"}
    assert judged["a_score"].drop_nulls().len() > 0.8 * len(judged)
    assert (res / "figures/planted_recovery.png").is_file()
    assert not (res / "lora").exists() and not (res / "sdf").exists()  # virtual SDF branches
