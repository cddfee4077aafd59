"""Throughput and token counts measured by an earlier run: its ``benchmark:`` files
(``results/benchmarks/<rule>/<model>/<target>.tsv``, Snakemake's seconds per job) and, next to
them, its rollout tables (``results/rollouts/<model>/<condition>.parquet``: tokens generated
per rollout)."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Calibration:
    """Seconds per job by (rule, model) (model None for rules without one), and for rollouts
    the measured generated tokens per second and per rollout, by model."""

    seconds: dict[tuple[str, str | None], list[float]] = field(default_factory=dict)
    generate_tok_s: dict[str, float] = field(default_factory=dict)
    tokens_per_rollout: dict[str, float] = field(default_factory=dict)

    def mean_seconds(self, rule: str, model: str | None) -> float | None:
        found = self.seconds.get((rule, model))
        return sum(found) / len(found) if found else None


def _seconds(tsv: Path) -> list[float]:
    with open(tsv, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    out = []
    for row in rows:
        try:
            out.append(float(row["s"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"benchmark file {tsv} has no numeric 's' column") from None
    return out


def load_calibration(bench_dir: str | Path, models: list[str]) -> Calibration:
    """Read every benchmark file under ``bench_dir``; a rule's second path part is its model
    when it names one of ``models``. Rollout tables of ``bench_dir/../rollouts`` give the
    tokens behind each rollout job's seconds."""
    root = Path(bench_dir)
    if not root.is_dir():
        raise ValueError(f"--calibrate {root}: not a directory of benchmark files")
    cal = Calibration()
    seconds: dict[tuple[str, str | None], list[float]] = defaultdict(list)
    for tsv in sorted(root.rglob("*.tsv")):
        parts = tsv.relative_to(root).parts
        rule = parts[0] if len(parts) > 1 else tsv.stem
        model = parts[1] if len(parts) > 2 and parts[1] in models else None
        seconds[(rule, model)] += _seconds(tsv)
    if not seconds:
        raise ValueError(f"--calibrate {root}: no benchmark (.tsv) files found")
    cal.seconds = dict(seconds)
    tables = root.parent / "rollouts"
    if tables.is_dir():
        import polars as pl

        for model in models:
            tokens = rollouts = 0
            secs = 0.0
            for path in sorted((tables / model).glob("*.parquet")):
                bench = root / "rollouts" / model / f"{path.stem}.tsv"
                frame = pl.read_parquet(path, columns=["completion_tokens"])
                tokens += int(frame["completion_tokens"].sum())
                rollouts += len(frame)
                if bench.is_file():
                    secs += sum(_seconds(bench))
            if rollouts:
                cal.tokens_per_rollout[model] = tokens / rollouts
            if secs > 0:
                cal.generate_tok_s[model] = tokens / secs
    return cal


__all__ = ["Calibration", "load_calibration"]
