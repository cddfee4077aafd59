"""bench/run_all.py reads both RESULT formats and knows every bench script."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import run_all  # noqa: E402


def test_parses_key_value_and_json_results():
    out = ("noise\nRESULT steering_throughput ratio=0.981 target=0.97 library_over_ours=1.2\n"
           'RESULT {"bench": "packing_efficiency", "value": 0.99, "ok": true}\n')
    got = run_all.parse_results(out)
    assert got["ratio"] == 0.981 and got["library_over_ours"] == 1.2 and got["value"] == 0.99


def test_every_bench_script_is_checked():
    scripts = {p.name for p in (REPO / "bench").glob("*.py")
               if not p.name.startswith("_") and p.name != "run_all.py"}
    assert scripts == set(run_all.CHECKS)
