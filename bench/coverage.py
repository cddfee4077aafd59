"""Empirical coverage of the nominal CIs on a simulated organism with planted motivations.

Each replicate draws a fresh simulated organism (the planted policy of
``resources/simulated/planted_af.yaml`` with a new seed: new goal effects, new sampling noise),
runs the analysis chain in-process (``metrics.simulation.simulate``: the simulated backend,
the real outcome parser, ``condition_metrics``, ``sdf_effects``, ``prompt_effects``; no
Snakemake) and asks whether each CI covers the planted value. It prints the coverage of the
gap (every condition), the Delta-gap (every intervention, SDF and prompt), S_A and S_B (SDF and
prompt), each with its Monte Carlo standard error, at the given design (goals x seeds; the demo
runs the simulated organism with 24 goals x 4 seeds).

    .venv/bin/python bench/coverage.py [--replicates 200] [--goals 24] [--seeds 4]
        [--boot 2000] [--workers 2] [--strengths standard]

The last line is machine-readable: ``RESULT coverage gap=... delta_gap=... S_A=... S_B=...``.
Target: each within 0.93-0.97.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
QUANTITIES = ("gap", "delta_gap", "S_A", "S_B")


def _replicate(args: tuple[int, int, int, int, tuple[str, ...]]) -> pl.DataFrame:
    seed, n_goals, n_seeds, n_boot, strengths = args
    os.chdir(ROOT)
    from motivation_profiles.backends.simulated import Policy
    from motivation_profiles.metrics.simulation import demo_design, simulate

    goals = (pl.read_csv(ROOT / "resources/goals/embedded_goals.csv").head(n_goals)
             .with_row_index("goal_id").with_columns(pl.col("goal_id").cast(pl.Int64)))
    policy = Policy.load(ROOT / "resources/simulated/planted_af.yaml", seed=seed)
    design = demo_design(goals, range(n_seeds), root=ROOT, calibration=None, judge=False,
                         fast=True, n_boot=n_boot, strengths=list(strengths), seed=seed)
    table = simulate(policy, design)["recovery"]
    return (table.filter(pl.col("quantity").is_in(QUANTITIES))
            .select("quantity", "method", "covered", "z").with_columns(replicate=pl.lit(seed)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--goals", type=int, default=24, help="at most 24 (the embedded goal file)")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--strengths", nargs="+", default=["standard"])
    ap.add_argument("--first-seed", type=int, default=1000,
                    help="replicate seeds are first-seed, first-seed+1, ...")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    jobs = [(args.first_seed + r, args.goals, args.seeds, args.boot, tuple(args.strengths))
            for r in range(args.replicates)]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        tables = list(pool.map(_replicate, jobs))
    rows = pl.concat(tables)
    summary = (rows.group_by("quantity")
               .agg(coverage=pl.col("covered").mean(), n=pl.len(),
                    beyond_3se=(pl.col("z").abs() > 3).mean()))
    cov = {q: None for q in QUANTITIES}
    print(f"design: {args.goals} goals x {args.seeds} seeds x 2 tiers; "
          f"{args.replicates} replicates; bootstrap {args.boot}; strengths {args.strengths}; "
          f"{time.perf_counter() - t0:.0f} s")
    print("quantity   coverage  (MC s.e.)  intervals  share |z|>3")
    for q in QUANTITIES:
        r = summary.filter(pl.col("quantity") == q)
        if r.is_empty():
            continue
        c, n, b = r["coverage"][0], r["n"][0], r["beyond_3se"][0]
        # intervals within a replicate are correlated: the s.e. uses replicates as units
        per = rows.filter(pl.col("quantity") == q).group_by("replicate").agg(
            pl.col("covered").mean())["covered"]
        se = float(per.std() / len(per) ** 0.5) if len(per) > 1 else float("nan")
        cov[q] = c
        flag = "" if 0.93 <= c <= 0.97 else "  (outside 0.93-0.97)"
        print(f"{q:<10} {c:8.3f}  ({se:.3f})   {n:9d}  {b:.4f}{flag}")
    print("RESULT coverage " + " ".join(f"{q}={cov[q]:.4f}" for q in QUANTITIES
                                        if cov[q] is not None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
