"""The planner's table: predicted tokens against what a run generated, calibration from its
benchmark files, API dollars with cache hits, and the printed paper-scale plan."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import absolutize, load_repo_config, run_snakemake, tiny_config

from motivation_profiles.cli import main
from motivation_profiles.planner import formulas as F
from motivation_profiles.planner.calibrate import load_calibration
from motivation_profiles.planner.jobs import Job
from motivation_profiles.planner.plan import Planner, totals
from motivation_profiles.planner.settings import planner_settings, schema_defaults


def predicted_vs_actual(planner: Planner, results) -> dict[str, tuple[float, int]]:
    """condition -> (predicted generated tokens, completion_tokens summed over its table)."""
    out = {}
    dag = {(j.model, j.target): j for j in planner.jobs() if j.rule == "rollouts"}
    for path in sorted((results / "rollouts").glob("*/*.parquet")):
        model, condition = path.parent.name, path.stem
        cost = planner.job_cost(dag[(model, condition)])  # the DAG's job for this table
        out[condition] = (cost.generated_tokens,
                          int(pl.read_parquet(path)["completion_tokens"].sum()))
    return out


@pytest.mark.slow
def test_predicted_tokens_match_a_tiny_run_and_calibration(tmp_path):
    cfg = tiny_config(prompt=True)
    run_snakemake(tmp_path, cfg, "--until", "rollouts", timeout=900)
    planner = Planner(cfg, base_dir=tmp_path)
    compared = predicted_vs_actual(planner, tmp_path / "results")
    assert "baseline" in compared and "prompt-A1_amp-standard" in compared
    for condition, (predicted, actual) in compared.items():
        assert actual > 0
        assert abs(predicted - actual) <= 0.10 * actual, (condition, predicted, actual)

    cal = load_calibration(tmp_path / "results/benchmarks", ["tiny"])
    assert cal.mean_seconds("rollouts", "tiny") > 0
    assert cal.generate_tok_s["tiny"] > 0 and cal.tokens_per_rollout["tiny"] > 0
    calibrated = Planner(cfg, base_dir=tmp_path, calibration=cal)
    assert calibrated.rate("tiny", "generate") == cal.generate_tok_s["tiny"]


def test_settings_defaults_come_from_the_schema():
    d = schema_defaults()
    assert d["gpu_type"] == "h100" and d["throughput"]["h100"]["generate"] > 0
    s = planner_settings({"planner": {"turn_fill": 0.3, "throughput": {
        "b200": {"generate": 1, "prefill": 2, "train": 3}}, "gpu_type": "b200"}})
    assert s["turn_fill"] == 0.3 and "h100" in s["throughput"] and s["gpu_type"] == "b200"
    with pytest.raises(ValueError, match="planner.gpu_type"):
        planner_settings({"planner": {"gpu_type": "tpu"}})


@pytest.mark.slow  # builds the paper DAG (seconds to tens of seconds on a loaded machine)
def test_paper_rows_follow_the_formulas(tmp_path):
    cfg = absolutize(load_repo_config("configs/paper.yaml"))
    cfg["hosted"]["cache_dir"] = str(tmp_path / "cache")  # no cache: every request paid
    p = Planner(cfg)
    s = p.settings
    table = p.table()
    row = lambda m, r: table.filter((pl.col("model") == m) & (pl.col("rule") == r)  # noqa
                                    ).row(0, named=True)
    R = F.rollouts_per_job(520, 3)
    share = F.expected_turns(s["rollout_turns"], 4) * s["turn_fill"]
    # open model: GPU-hours = gpus * (gen / rate_gen + prefill / rate_prefill)
    r = row("llama-3.1-70b", "rollouts")
    assert r["generated_tokens"] == pytest.approx(r["jobs"] * R * share * 4000)
    rate_g = F.job_rate(s["throughput"][s["gpu_type"]]["generate"], 4, 70)
    rate_p = F.job_rate(s["throughput"][s["gpu_type"]]["prefill"], 4, 70)
    assert r["gpu_hours"] == pytest.approx(4 * (r["generated_tokens"] / rate_g
                                                + r["prefill_tokens"] / rate_p) / 3600)
    # hosted model: dollars at its price, Batches factor (every job is >= batch_threshold)
    c = row("claude-3-opus", "rollouts")
    assert c["gpu_hours"] == 0 and c["api_requests"] == pytest.approx(c["jobs"] * R)
    assert c["usd"] == pytest.approx(F.api_usd(c["api_input_tokens"], c["api_output_tokens"],
                                                15.0, 75.0, batched=True))
    j = row("claude-3-opus", "judge")  # the Sonnet judge, k = 3
    assert j["api_requests"] == pytest.approx(c["jobs"] * R * s["scratchpad_share"] * 3)
    assert j["api_output_tokens"] == pytest.approx(j["api_requests"] * s["judge_fill"] * 600)
    # LoRA: 10M tokens x 3 epochs per intervention branch (Llama-3.1-70B's organism is the
    # released adapter: no organism training); a trained organism (Qwen) adds its two
    # af_organism branches (with and without +self), the whole corpus x 1 epoch each
    t = row("llama-3.1-70b", "train_lora")
    assert t["trained_tokens"] == pytest.approx(t["jobs"] * 10e6 * 3)
    assert t["disk_gb"] == pytest.approx(t["jobs"] * F.lora_adapter_bytes(70, 64) / 1e9)
    q = row("qwen-2.5-72b", "train_lora")
    corpus = F.capped_output(15000, s["document_fill"], 3000)
    assert q["trained_tokens"] == pytest.approx((q["jobs"] - 2) * 10e6 * 3 + 2 * corpus)
    assert row("llama-3.1-405b", "prepare_model")["disk_gb"] == pytest.approx(810)
    d = row("claude-sonnet-4-5", "generate_documents")
    assert d["api_requests"] == d["jobs"] * (1 + 100 + 15000 + 15000)  # per universe
    tot = totals(table)
    assert tot["jobs"] == table["jobs"].sum() and tot["usd"] > 0 and tot["gpu_hours"] > 0


def test_cache_hits_lower_the_dollars(tmp_path):
    cfg = absolutize(load_repo_config("configs/paper.yaml"))
    cfg["hosted"]["cache_dir"] = str(tmp_path / "cache")
    jobs = [Job("rollouts", "claude-3-opus", "baseline")] * 2  # 2 x 3,120 requests
    before = Planner(cfg).table(jobs)
    for i in range(1000):
        key = f"{i:064x}"
        f = tmp_path / "cache" / key[:2] / f"{key}.json"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps({"format": 2, "key": key, "sha256": "0", "record": {
            "text": "x", "stop_reason": "end_turn", "model": "claude-3-opus-20240229",
            "usage": {"input_tokens": 1, "output_tokens": 1}}}))
    after = Planner(cfg).table(jobs)
    sel = lambda t: t.filter((pl.col("model") == "claude-3-opus")  # noqa: E731
                             & (pl.col("rule") == "rollouts")).row(0, named=True)
    assert sel(after)["api_cached"] == 1000
    assert sel(after)["usd"] < sel(before)["usd"]


@pytest.mark.slow  # builds the paper DAG
def test_cli_prints_the_paper_plan(capsys, tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo)  # the config's relative paths (prompts, rubric, cache)
    out_csv = tmp_path / "plan.csv"
    assert main(["plan", "--configfile", "configs/paper.yaml", "--csv", str(out_csv)]) == 0
    text = capsys.readouterr().out
    assert "TOTAL" in text and "llama-3.1-405b" in text and "USD" in text
    assert "after calibration_select" in text
    assert len(pl.read_csv(out_csv)) > 10


def test_cli_errors_name_the_problem(capsys, tmp_path, repo, monkeypatch):
    monkeypatch.chdir(repo)
    assert main(["plan", "--configfile", "configs/paper.yaml", "--calibrate",
                 str(tmp_path / "nope")]) == 1
    assert "not a directory" in capsys.readouterr().err
