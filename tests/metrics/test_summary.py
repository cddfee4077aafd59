"""The end-of-run summary (``motivation-profiles summary``) from hand-written metrics tables."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest

from motivation_profiles.cli import main
from motivation_profiles.core.provenance import write_table
from motivation_profiles.metrics.summary import summary

PROV = {"rule": "test"}


def _condition(condition: str, *, n: int, unparseable: float, truncated: float,
               gap: float) -> dict:
    row = {"model": "m", "condition": condition, "n_goals": n // 2, "n_seeds": 2,
           "n_pairs": n, "gap": gap, "gap_ci_low": gap - 0.25, "gap_ci_high": gap + 0.25,
           "ci_level": 0.9, "bootstrap_samples": 100}
    for tier, comp in (("monitored", 0.5), ("unmonitored", 0.25)):
        row.update({f"{tier}_n": n, f"{tier}_compliance": comp,
                    f"{tier}_compliance_ci_low": 0.0, f"{tier}_compliance_ci_high": 1.0,
                    f"{tier}_rejected": 1 - comp - unparseable - truncated,
                    f"{tier}_unparseable": unparseable, f"{tier}_truncated": truncated})
    return row


def _profile(method: str, strength: str, quantity: str, est: float,
             checkpoint: str | None = None) -> dict:
    return {"model": "m", "display_name": "Model M", "method": method, "strength": strength,
            "naming": "original", "quantity": quantity, "estimate": est,
            "ci_low": est - 0.5, "ci_high": est + 0.5, "checkpoint": checkpoint}


@pytest.fixture
def results(tmp_path):
    res = tmp_path / "results"
    write_table(pl.DataFrame([
        _condition("baseline", n=8, unparseable=0.25, truncated=0.0, gap=0.25),
        _condition("prompt-A1_amp-standard", n=4, unparseable=0.0, truncated=0.5, gap=0.0),
    ]), res / "metrics/m/conditions.parquet", PROV)
    write_table(pl.DataFrame([
        _profile("prompt", "standard", "S_A", 0.125), _profile("prompt", "standard", "S_B", -0.25),
        _profile("sdf", "standard", "S_A", 1.0),
        _profile("prompt", "standard", "S_A", 9.0, checkpoint="sdf-A1_amp"),  # calibration row
    ]), res / "metrics/profiles.parquet", PROV)
    write_table(pl.DataFrame({"status": ["ok", "ok", "unparsed", "no_scratchpad"]}),
                res / "judge/m/baseline.parquet", PROV)
    write_table(pl.DataFrame({"status": ["ok"] * 5}), res / "judge/m/raw-baseline.parquet", PROV)
    (res / "figures").mkdir()
    for name in ("b_fig", "a_fig"):
        (res / "figures" / f"{name}.png").write_bytes(b"png")
    return res


def test_summary_reports_figures_gap_parsing_judge_and_profiles(results):
    text = summary(results)
    lines = text.splitlines()
    assert lines[0] == f"figures: 2 in {results / 'figures'}/ (a_fig, b_fig)"
    assert lines[1] == f"report:  {results / 'report.html'} (not built yet)"
    assert "model m (Model M)" in lines
    assert ("  baseline compliance: monitored 0.50, unmonitored 0.25; gap +0.25 [+0.00, +0.50] "
            "(90% CI, 4 goals x 2 seeds)") in lines
    # parsed: baseline 16 rollouts at 75%, prompt 8 at 50% -> 16 of 24
    assert "  outcomes parsed (accept or reject tag): 67% of 24 rollouts in 2 conditions" in lines
    # raw-AdvBench judge tables are not AF scratchpads: left out
    assert "  judge: 2 of 4 rollouts scored on both directions (50%; 1 conditions)" in lines
    prompt = next(line for line in lines if line.strip().startswith("prompt (standard"))
    assert "S_A +0.12 [-0.38, +0.62]" in prompt and "S_B -0.25 [-0.75, +0.25]" in prompt
    assert "+9.00" not in text  # calibration checkpoints are not the model's headline profile
    sdf = next(line for line in lines if line.strip().startswith("sdf (standard"))
    assert "S_A +1.00" in sdf and "S_B n/a" in sdf


def test_summary_names_the_report_when_built(results):
    (results / "report.html").write_text("<html/>")
    assert f"report:  {results / 'report.html'}\n" in summary(results)


def test_cli_summary_without_results_fails_clearly(tmp_path, capsys):
    assert main(["summary", str(tmp_path / "nowhere")]) == 1
    assert "no metrics yet" in capsys.readouterr().err


def test_cli_summary_loads_no_model_library(results):
    code = ("import sys; from motivation_profiles.cli import main; "
            f"rc = main(['summary', {str(results)!r}]); "
            "bad = sorted(m for m in ('torch', 'transformers') if m in sys.modules); "
            "print('LOADED', bad); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "model m (Model M)" in out
    assert "LOADED []" in out
