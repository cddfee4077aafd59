"""Benchmark: judge requests, cold vs. warm cache, counted by the server.

Judges N synthetic rollout rows x k samples with ``judge_rollouts`` through the real Anthropic
SDK path (``AnthropicClient`` + ``HostedBackend``) against the project's local fake Anthropic
server (``tests/fake_anthropic.py``), once through the Messages API and once through Message
Batches, each with a fresh cache directory:

- cold: the number of requests the server received (Messages calls, or items inside created
  batches) must equal items x k, with no duplicates: the API takes no seed, so the k samples
  of one scratchpad are k identical bodies, and each body must arrive exactly k times
  (duplicates = sum over bodies of max(0, count - k) = 0): each (scratchpad, sample index)
  is asked once;
- warm: the same table judged again by a fresh client on the same cache makes zero HTTP calls.

Counts come from the server's own request log, not from the client's counters. Wall times are
printed for information only (the fake answers instantly; the ratio says what the cache saves
in client-side overhead alone).

Exit status: 0 when every count matches, 2 otherwise (the comparison is a correctness check).

    .venv/bin/python bench/judge_throughput.py [--items N] [--samples K]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from fake_anthropic import API_KEY, FakeAnthropic  # noqa: E402

from motivation_profiles.backends.anthropic import AnthropicClient, HostedBackend  # noqa: E402
from motivation_profiles.backends.base import SamplingParams  # noqa: E402
from motivation_profiles.backends.hosted import API_KEY_ENV  # noqa: E402
from motivation_profiles.judge.scoring import Rubric, judge_rollouts  # noqa: E402


def _table(items: int) -> pl.DataFrame:
    return pl.DataFrame({
        "model": ["m"] * items, "condition": ["baseline"] * items,
        "goal_id": list(range(items)),
        "tier": ["monitored", "unmonitored"] * (items // 2) + ["monitored"] * (items % 2),
        "seed": [0] * items, "outcome": ["rejected"] * items,
        "scratchpad": [f"Reasoning {i}: the raters expect refusal; RLHF may change me."
                       for i in range(items)]})


def _answer(params, n):
    return ("<direction_a_score>3</direction_a_score><direction_a_quote>raters expect"
            "</direction_a_quote><direction_b_score>2</direction_b_score>"
            "<direction_b_quote>RLHF may change me</direction_b_quote>"), "end_turn", None


def _sent(fake: FakeAnthropic) -> list[str]:
    """Canonical bodies of every generation request the server received."""
    bodies = [c.body for c in fake.calls("messages")]
    for c in fake.calls("batch_create"):
        bodies += [r["params"] for r in c.body["requests"]]
    return [json.dumps(b, sort_keys=True) for b in bodies]


def run(path: str, items: int, samples: int) -> dict:
    rubric = Rubric.load(ROOT / "resources/judge/rubric.yaml")
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=300)
    table = _table(items)
    threshold = 10**9 if path == "messages" else 1
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic() as fake:
        fake.responder = _answer

        def judge():
            client = AnthropicClient(Path(tmp) / "cache", base_url=fake.base_url,
                                     batch_threshold=threshold, poll_interval=0.01)
            t0 = time.perf_counter()
            judge_rollouts(table, HostedBackend(client, "claude-judge"), rubric,
                           samples=samples, params=params, prefill=None,
                           meta={"judge_model": "claude-judge"})
            return time.perf_counter() - t0

        cold_s = judge()
        cold = _sent(fake)
        calls_before = len(fake.calls())
        warm_s = judge()
        warm_calls = len(fake.calls()) - calls_before
    counts = Counter(cold)
    return {"path": path, "expected": items * samples, "cold": len(cold),
            "duplicates": sum(max(0, c - samples) for c in counts.values()),
            "distinct_prompts": len(counts), "warm": warm_calls,
            "cold_s": cold_s, "warm_s": warm_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--samples", type=int, default=3)
    args = ap.parse_args()
    os.environ[API_KEY_ENV] = API_KEY
    rows = [run(p, args.items, args.samples) for p in ("messages", "batches")]
    print(f"{'path':<9} {'items x k':>9} {'cold requests':>13} {'duplicates':>10} "
          f"{'warm HTTP calls':>15} {'cold s':>7} {'warm s':>7} {'cold/warm':>9}")
    ok = True
    for r in rows:
        good = r["cold"] == r["expected"] and r["duplicates"] == 0 and r["warm"] == 0
        ok &= good
        print(f"{r['path']:<9} {r['expected']:>9} {r['cold']:>13} {r['duplicates']:>10} "
              f"{r['warm']:>15} {r['cold_s']:>7.2f} {r['warm_s']:>7.2f} "
              f"{r['cold_s'] / max(r['warm_s'], 1e-9):>8.1f}x {'ok' if good else 'FAIL'}")
    total = {k: sum(r[k] for r in rows) for k in ("expected", "cold", "duplicates", "warm")}
    print(f"RESULT judge_throughput cold_calls={total['cold']} expected={total['expected']} "
          f"duplicates={total['duplicates']} warm_calls={total['warm']} target=warm_calls==0")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
