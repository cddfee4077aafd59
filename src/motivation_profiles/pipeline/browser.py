"""Rule entry point of workflow/rules/browser.smk."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("motivation_profiles")

CALIBRATION_FIGURES = ("prompt_calibration", "judge_scores")
"""Figures that also read the calibration conditions (known only once the checkpoint ran)."""


def _model_condition(path: str) -> tuple[str, str]:
    p = Path(path)
    return p.parent.name, p.name.removesuffix(".parquet")


def browser(snakemake: Any) -> None:
    """Write the transcript browser from every rollout table and its judge table."""
    from motivation_profiles.browser.site import ConditionSource, write_site
    from motivation_profiles.core.io import write_text_atomic
    from motivation_profiles.pipeline.common import job_provenance

    rollouts, judged = list(snakemake.input.rollouts), list(snakemake.input.judged)
    if len(rollouts) != len(judged):
        raise ValueError(f"{len(rollouts)} rollout tables but {len(judged)} judge tables")
    sources = []
    for r, j in zip(rollouts, judged, strict=True):
        if _model_condition(r) != _model_condition(j):
            raise ValueError(f"rollout table {r} paired with judge table {j}")
        sources.append(ConditionSource(*_model_condition(r), Path(r), Path(j)))
    figures = {k: {m: list(c) for m, c in v.items()} for k, v in snakemake.params.figures.items()}
    for name in CALIBRATION_FIGURES:
        if name not in figures:
            continue
        for s in sources:
            if "@prompt-" in s.condition:
                figures[name].setdefault(s.model, []).append(s.condition)
    out = Path(snakemake.output[0])
    manifest = write_site(out, sources, display_names=snakemake.params.display_names,
                          figures=figures)
    write_text_atomic(out / "provenance.json", json.dumps(job_provenance(snakemake), indent=1,
                                                          sort_keys=True, default=str))
    log.info("browser: %d model(s), %d condition(s) -> %s", len(manifest["models"]),
             len(sources), out / "index.html")
