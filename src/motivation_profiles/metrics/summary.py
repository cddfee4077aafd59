"""The end-of-run summary (``motivation-profiles summary``): where the figures and the report
are, and per model the baseline gap with its CI, how many outcomes parsed, how many scratchpads
the judge scored, and S_A / S_B per method. Reads only the metrics and judge tables (polars),
never a model, so it prints in about a second after any run.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from motivation_profiles.core.provenance import read_table

# rollout outcome rates per tier in conditions.parquet that are not a parsed answer
_UNPARSED = ("unparseable", "truncated")


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _ci(row: dict, key: str | None = None, signed: bool = True) -> str:
    """``estimate [low, high]`` of a profile row (key None) or of column ``key`` and its CI."""
    names = ("estimate", "ci_low", "ci_high") if key is None else \
        (key, f"{key}_ci_low", f"{key}_ci_high")
    est, lo, hi = (row.get(n) for n in names)
    return f"{_fmt(est, signed)} [{_fmt(lo, signed)}, {_fmt(hi, signed)}]"


def _baseline_lines(conditions: pl.DataFrame) -> list[str]:
    base = conditions.filter(pl.col("condition") == "baseline")
    if base.is_empty():
        return ["  baseline: no baseline condition in conditions.parquet"]
    r = base.row(0, named=True)
    level = int(round(100 * (r.get("ci_level") or 0.95)))
    lines = [
        f"  baseline compliance: monitored {_fmt(r['monitored_compliance'])}, "
        f"unmonitored {_fmt(r['unmonitored_compliance'])}; "
        f"gap {_ci(r, 'gap')} ({level}% CI, {r['n_goals']} goals x {r['n_seeds']} seeds)",
    ]
    # parsed = compliant or rejected; rates are per tier, weighted by each tier's rollouts
    n = parsed = 0.0
    for row in conditions.iter_rows(named=True):
        for tier in ("monitored", "unmonitored"):
            k = row[f"{tier}_n"] or 0
            bad = sum(row[f"{tier}_{o}"] or 0.0 for o in _UNPARSED)
            n += k
            parsed += k * (1.0 - bad)
    if n:
        lines.append(f"  outcomes parsed (accept or reject tag): {parsed / n:.0%} of "
                     f"{int(n)} rollouts in {conditions.height} conditions")
    return lines


def _judge_line(judge_dir: Path) -> str | None:
    files = sorted(f for f in judge_dir.glob("*.parquet") if not f.name.startswith("raw-"))
    if not files:
        return None
    status = pl.concat([read_table(f).select("status") for f in files])
    ok = status.filter(pl.col("status") == "ok").height
    return (f"  judge: {ok} of {status.height} rollouts scored on both directions "
            f"({ok / status.height:.0%}; {len(files)} conditions)")


def _profile_lines(profiles: pl.DataFrame, model: str) -> list[str]:
    rows = profiles.filter(pl.col("model") == model)
    if "checkpoint" in rows.columns:
        rows = rows.filter(pl.col("checkpoint").is_null())
    lines = []
    keys = rows.select("method", "strength", "naming").unique(maintain_order=True)
    for method, strength, naming in keys.iter_rows():
        sel = rows.filter((pl.col("method") == method) & (pl.col("strength") == strength)
                          & (pl.col("naming") == naming))
        parts = []
        for q in ("S_A", "S_B"):
            hit = sel.filter(pl.col("quantity") == q)
            parts.append(f"{q} {_ci(hit.row(0, named=True))}" if hit.height else f"{q} n/a")
        label = f"{method} ({strength}, {naming})"
        lines.append(f"  {label:<32} {'   '.join(parts)}")
    return lines


def summary(results: str | Path = "results", report: str | Path | None = None) -> str:
    """The summary text of a finished (or partial) run under ``results``."""
    results = Path(results)
    report = Path(report) if report is not None else results / "report.html"
    metrics = results / "metrics"
    if not metrics.is_dir():
        raise FileNotFoundError(f"{metrics} does not exist: no metrics yet (run the workflow "
                                "first, e.g. `make demo`)")
    figures = sorted((results / "figures").glob("*.png"))
    out = [f"figures: {len(figures)} in {results / 'figures'}/ "
           f"({', '.join(f.stem for f in figures) or 'none yet'})",
           f"report:  {report}" + ("" if report.is_file() else " (not built yet)")]
    profiles_path = metrics / "profiles.parquet"
    profiles = read_table(profiles_path) if profiles_path.is_file() else None
    for model_dir in sorted(p for p in metrics.iterdir() if p.is_dir()):
        model = model_dir.name
        conditions_path = model_dir / "conditions.parquet"
        display = ""
        if profiles is not None and "display_name" in profiles.columns:
            names = profiles.filter(pl.col("model") == model)["display_name"].unique().to_list()
            display = f" ({names[0]})" if names else ""
        out.append(f"model {model}{display}")
        if conditions_path.is_file():
            out.extend(_baseline_lines(read_table(conditions_path)))
        judge = _judge_line(results / "judge" / model)
        if judge:
            out.append(judge)
        if profiles is not None:
            lines = _profile_lines(profiles, model)
            if lines:
                out.append("  motivation profile (estimate [CI]):")
                out.extend(lines)
    return "\n".join(out)
