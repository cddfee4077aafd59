"""Benchmark: `snakemake -n` on the paper-scale DAG, and how it grows with the number of models.

Runs ``snakemake -n --configfile <cfg>`` from the repository root (no job runs, nothing is
written but Snakemake's own metadata reads) for the paper config restricted to 1, 2, 3 and 4
open-weight models (Llama-3.1-70B always kept: the steering stage names it) and for the full
config (the four models and Claude 3 Opus). Wall time of the whole command, median of
``--repeats``, is what a user waits for. Target: the full paper DAG in < 5 s; the per-model
growth is reported (seconds and jobs per added model), not gated.

Baseline, measured in the same run: Snakemake's own floor for a DAG of the same size, a
generated workflow with as many jobs as the paper DAG, each a ``script:`` job with one input,
a log and a benchmark file (chains of three rules). ``paper / floor`` says how much of the dry
run is this workflow's own (its parse-time config validation and plans, its input functions,
params and resources) and how much any Snakemake workflow of that many jobs pays. Runs are
interleaved (floor, then every variant, per repeat) so that load on a shared machine hits all
of them alike; the minimum is printed beside the median.

    .venv/bin/python bench/dag_dryrun.py [--repeats R]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper.yaml"
OPEN_MODELS = ["llama-3.1-70b", "qwen-2.5-72b", "llama-3.1-405b", "qwq-32b"]
TARGET_S = 5.0


def jobs(output: str) -> int:
    m = re.search(r"^total\s+(\d+)", output, re.M)
    if not m:
        raise RuntimeError(f"no job total in snakemake's output:\n{output[-2000:]}")
    return int(m.group(1))


def dry_run(config: Path | None, cwd: Path = ROOT) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "snakemake", "-n"]
    if config is not None:
        cmd += ["--configfile", str(config)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return dt, jobs(proc.stdout + proc.stderr)


FLOOR_SNAKEFILE = """\
N = {chains}
rule all:
    input: expand("c/{{i}}.txt", i=range(N))
"""
FLOOR_RULE = """
rule {name}:{input}
    output: "{name}/{{i}}.txt"
    log: "logs/{name}/{{i}}.log"
    benchmark: "benchmarks/{name}/{{i}}.tsv"
    script: "job.py"
"""


def write_floor(directory: Path, jobs: int) -> None:
    """A workflow of ``jobs`` dry-run jobs (``all`` + chains of three script rules)."""
    chains = max(1, (jobs - 1) // 3)
    text = FLOOR_SNAKEFILE.format(chains=chains)
    for name, upstream in (("a", None), ("b", "a"), ("c", "b")):
        text += FLOOR_RULE.format(
            name=name, input=f'\n    input: "{upstream}/{{i}}.txt"' if upstream else "")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "Snakefile").write_text(text)
    (directory / "job.py").write_text("pass\n")


def subset(cfg: dict, keep: list[str]) -> dict:
    out = yaml.safe_load(yaml.safe_dump(cfg))
    out["models"] = {k: v for k, v in cfg["models"].items() if k in keep}
    per_model = out["sdf"]["training"].get("per_model") or {}
    out["sdf"]["training"]["per_model"] = {k: v for k, v in per_model.items() if k in keep}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strict", action="store_true", help="exit 1 above target")
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(PAPER.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        variants = [(f"{n} open model{'s' if n > 1 else ''}", subset(cfg, OPEN_MODELS[:n]))
                    for n in range(1, 5)] + [("paper (4 open + Claude 3 Opus)", cfg)]
        paths = []
        for i, (_, c) in enumerate(variants):
            paths.append(Path(tmp) / f"cfg{i}.yaml")
            paths[-1].write_text(yaml.safe_dump(c, sort_keys=False))
        _, paper_jobs = dry_run(PAPER)  # warm-up: file-system caches, byte-compiled modules
        floor_dir = Path(tmp) / "floor"
        write_floor(floor_dir, paper_jobs)
        dry_run(None, floor_dir)
        times: dict[str, list[float]] = {label: [] for label, _ in variants}
        times["floor"] = []
        counts: dict[str, int] = {}
        for _ in range(args.repeats):
            t, counts["floor"] = dry_run(None, floor_dir)
            times["floor"].append(t)
            for (label, _), path in zip(variants, paths, strict=True):
                t, counts[label] = dry_run(path)
                times[label].append(t)
    rows = []
    for label in [v[0] for v in variants] + ["floor"]:
        med, low = statistics.median(times[label]), min(times[label])
        rows.append((label, med, counts[label]))
        name = label if label != "floor" else "floor (generated, same job count)"
        print(f"{name:<34} {med:6.2f} s  (min {low:5.2f})  {counts[label]:6d} jobs  runs: "
              + " ".join(f"{t:.2f}" for t in times[label]), flush=True)
    one, four, full, floor = rows[0], rows[3], rows[4], rows[5]
    per_model = (four[1] - one[1]) / 3
    print(f"growth 1 -> 4 open models: {four[1] / one[1]:.2f}x time for "
          f"{four[2] / one[2]:.2f}x jobs ({per_model:+.2f} s per added model)")
    print(f"paper / Snakemake floor at {floor[2]} jobs: {full[1] / floor[1]:.2f}x "
          f"({full[1] - floor[1]:.2f} s of the dry run is this workflow's own)")
    ok = full[1] < TARGET_S
    print(f"paper DAG dry run: {full[1]:.2f} s for {full[2]} jobs (target < {TARGET_S} s): "
          f"{'PASS' if ok else 'ABOVE TARGET'}")
    print(f"RESULT dag_dryrun seconds={full[1]:.2f} jobs={full[2]} target={TARGET_S} "
          f"growth_1_to_4={four[1] / one[1]:.2f} floor_seconds={floor[1]:.2f} "
          f"vs_floor={full[1] / floor[1]:.2f}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
