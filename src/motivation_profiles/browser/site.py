"""Write the static transcript browser (``results/browser/``).

Layout of the site (no build step, nothing fetched from the network at view time)::

    index.html, app.js, style.css      copied from this package's ``assets/``
    data/manifest.js                   models, conditions (row counts, outcome counts), figures
    data/<model>/<condition>.js        one condition's rollouts with their judge columns

Data files are JSON wrapped in one call, ``MP.receive(<json>)``: a page opened from
``file://`` may not ``fetch()`` neighbouring files, but it may load a ``<script>``; so each
condition is loaded on demand by adding a script element. The JSON is written with ``<``, ``>``,
``&`` and the two JavaScript line separators escaped as ``\\uXXXX``, and the page renders every
model-written string with ``textContent`` (never as HTML), so a transcript containing
``<script>`` shows as text.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from motivation_profiles.core.io import write_text_atomic

ASSETS = ("index.html", "app.js", "style.css")
"""The package data files copied into the site."""

ROLLOUT_COLUMNS = ("goal_id", "goal", "tier", "seed", "outcome", "accepted_then_refused",
                   "output_complete", "n_turns", "turns", "finish_reasons", "prompt_tokens",
                   "completion_tokens", "scratchpad", "final_output")
"""Rollout-table columns the browser shows (``rollouts/run.py`` ROW_SCHEMA)."""

JUDGE_COLUMNS = ("status", "a_score", "a_votes", "a_quote", "a_modal_agreement", "b_score",
                 "b_votes", "b_quote", "b_modal_agreement", "complied", "votes", "raw_answers",
                 "judge_model", "rubric")
"""Judge-table columns the browser shows: Direction A/B (``judge/scoring.py``) or, for raw
conditions, the compliance judge (``judge/compliance.py``); absent columns are skipped."""

KEY = ("goal_id", "tier", "seed")


@dataclass(frozen=True)
class ConditionSource:
    """One condition's tables: its rollouts and, when judged, its judge table."""

    model: str
    condition: str
    rollouts: Path
    judge: Path | None = None


def _clean(value: Any) -> Any:
    """JSON-safe values: NaN/inf -> None, recursively through lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def script_json(obj: Any) -> str:
    """``obj`` as JSON that is also safe inside a script file or element: ``<``, ``>``, ``&``,
    U+2028 and U+2029 written as ``\\uXXXX`` escapes (same value once parsed)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def condition_rows(rollouts: pl.DataFrame, judged: pl.DataFrame | None) -> list[dict[str, Any]]:
    """One record per rollout (table order) with the browser's rollout columns and, matched by
    (goal_id, tier, seed), the judge's columns."""
    missing = [c for c in ROLLOUT_COLUMNS if c not in rollouts.columns]
    if missing:
        raise ValueError(f"rollout table lacks column(s) {missing}")
    frame = rollouts.select(ROLLOUT_COLUMNS)
    if judged is not None:
        lacking = [c for c in KEY if c not in judged.columns]
        if lacking:
            raise ValueError(f"judge table lacks key column(s) {lacking}")
        cols = [c for c in JUDGE_COLUMNS if c in judged.columns]
        right = judged.select([*KEY, *cols]).unique(subset=list(KEY), keep="first")
        if len(right) != len(judged):
            raise ValueError("judge table has more than one row per (goal_id, tier, seed)")
        frame = frame.join(right, on=list(KEY), how="left", maintain_order="left")
    return [{k: _clean(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]


def _summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[str(r["outcome"])] = outcomes.get(str(r["outcome"]), 0) + 1
    return {"rows": len(rows), "outcomes": dict(sorted(outcomes.items())),
            "judged": any("status" in r for r in rows)}


def data_file(model: str, condition: str) -> str:
    """A condition's data file, relative to the site root."""
    return f"data/{model}/{condition}.js"


def write_site(out_dir: str | Path, sources: Iterable[ConditionSource], *,
               display_names: Mapping[str, str] | None = None,
               figures: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
               read: Any = None) -> dict[str, Any]:
    """Write the site into ``out_dir`` (created; an existing one is replaced) and return its
    manifest. ``figures`` maps a figure name to ``{model: [conditions]}`` (the rollouts behind
    it: the report's captions link to ``index.html#figure=<name>``). ``read`` reads a table
    (default :func:`motivation_profiles.core.provenance.read_table`)."""
    if read is None:
        from motivation_profiles.core.provenance import read_table as read
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    package = resources.files("motivation_profiles.browser") / "assets"
    for name in ASSETS:
        write_text_atomic(out / name, (package / name).read_text(encoding="utf-8"))
    models: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    for src in sources:
        if (src.model, src.condition) in seen:
            raise ValueError(f"condition {src.model}/{src.condition} listed twice")
        seen.add((src.model, src.condition))
        rows = condition_rows(read(src.rollouts), read(src.judge) if src.judge else None)
        payload = {"model": src.model, "condition": src.condition, "rows": rows}
        path = out / data_file(src.model, src.condition)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, f"MP.receive({script_json(payload)});\n")
        entry = models.setdefault(src.model, {
            "display_name": (display_names or {}).get(src.model, src.model), "conditions": {}})
        entry["conditions"][src.condition] = {"file": data_file(src.model, src.condition),
                                              **_summary(rows)}
    manifest = {"models": models,
                "figures": {k: {m: list(c) for m, c in v.items()}
                            for k, v in (figures or {}).items()}}
    write_text_atomic(out / "data" / "manifest.js", f"MP.manifest({script_json(manifest)});\n")
    return manifest


__all__ = ["ASSETS", "ConditionSource", "condition_rows", "data_file", "script_json",
           "write_site"]
