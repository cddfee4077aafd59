"""The site writer: escaped data files, rollouts joined with their judge rows, clear errors."""

from __future__ import annotations

import json

import polars as pl
import pytest
from browser_tables import condition_sources_fixture  # noqa: F401  (a fixture)

from motivation_profiles.browser.site import condition_rows, script_json, write_site
from motivation_profiles.core.provenance import read_table


def test_script_json_escapes_markup_and_round_trips():
    value = {"t": "</script><script>alert(1)</script> & \u2028 \u2029 é", "n": [1, None]}
    text = script_json(value)
    for bad in ("<", ">", "&", "\u2028", "\u2029"):
        assert bad not in text
    assert json.loads(text) == value


def test_write_site_files_and_manifest(tmp_path, condition_sources):
    site = tmp_path / "site"
    manifest = write_site(site, condition_sources, display_names={"m": "Model M"},
                          figures={"baseline_compliance": {"m": ["baseline"]}})
    for name in ("index.html", "app.js", "style.css", "data/manifest.js",
                 "data/m/baseline.js", "data/m/prompt-A1_amp-standard.js"):
        assert (site / name).is_file(), name
    html = (site / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched at view time
    info = manifest["models"]["m"]["conditions"]["baseline"]
    assert info["rows"] == 12 and info["judged"] and sum(info["outcomes"].values()) == 12
    text = (site / "data/m/baseline.js").read_text()
    assert text.startswith("MP.receive(") and "<" not in text and ">" not in text
    payload = json.loads(text[len("MP.receive("):-len(");\n")])
    row = next(r for r in payload["rows"] if r["goal_id"] == 1)
    assert row["scratchpad"].startswith("<script>")  # the value itself is kept, as text
    assert row["a_score"] == 1.0 and row["a_votes"] == [1, 1]


def test_condition_rows_join_and_errors(condition_sources):
    src = condition_sources[0]
    rollouts, judged = read_table(src.rollouts), read_table(src.judge)
    rows = condition_rows(rollouts, judged.reverse())  # joined by key, not by position
    assert [(r["goal_id"], r["tier"]) for r in rows] == list(
        zip(rollouts["goal_id"], rollouts["tier"], strict=True))
    assert all(r["b_score"] == 4 - r["goal_id"] % 5 for r in rows)
    assert "status" not in condition_rows(rollouts, None)[0]
    with pytest.raises(ValueError, match="lacks column"):
        condition_rows(rollouts.drop("scratchpad"), judged)
    with pytest.raises(ValueError, match="more than one row"):
        condition_rows(rollouts, pl.concat([judged, judged.head(1)]))


def test_duplicate_condition_is_an_error(tmp_path, condition_sources):
    with pytest.raises(ValueError, match="listed twice"):
        write_site(tmp_path / "s", [condition_sources[0], condition_sources[0]])


def test_report_captions_link_to_the_browser(repo):
    """Every figure drawn from rollouts links to the browser view of them (#figure=<name>);
    the two drawn from pairs and activations only have no rollouts behind them, nor has the
    departures table (a config table, not a figure)."""
    no_rollouts = {"steering_diagnostics", "sdf_steering_alignment", "departures"}
    for rst in sorted((repo / "workflow/report").glob("*.rst")):
        link = f"<results/browser/index.html#figure={rst.stem}>`_"
        assert (link in rst.read_text()) != (rst.stem in no_rollouts), rst.name
