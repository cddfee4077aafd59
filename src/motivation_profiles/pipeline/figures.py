"""Rule entry points of the figure rules (workflow/rules/figures.smk and the steering figures
of workflow/rules/steering.smk): one function per module of ``motivation_profiles.figures``,
so a figure rule's code inputs are the one figure module that draws it (plus shared style)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from motivation_profiles.pipeline.common import read_all


def _draw(module: ModuleType, snakemake: Any) -> None:
    """Draw ``module.<params.kind>`` from the concatenated input tables."""
    draw = getattr(module, snakemake.params.kind)
    files = [*snakemake.input.tables, *snakemake.input.get("more", [])]
    extra = {}
    # side tables a figure takes by name: vector norms (steering captions), per-condition
    # rates (Figure 3's truncated / unparseable rates)
    for name in ("norms", "rates"):
        if hasattr(snakemake.input, name):
            side = list(getattr(snakemake.input, name))
            extra[name] = read_all(side) if side else None
    draw(read_all(files), snakemake.params.display_names, list(snakemake.output),
         dpi=snakemake.params.dpi, **extra)


def draw_baseline(snakemake: Any) -> None:
    from motivation_profiles.figures import baseline

    p = snakemake.params
    baseline.baseline_compliance(read_all(snakemake.input.tables), p.display_names,
                                 list(snakemake.output), dpi=p.dpi, organisms=p.organisms)


def draw_sdf(snakemake: Any) -> None:
    from motivation_profiles.figures import sdf

    _draw(sdf, snakemake)


def draw_profiles(snakemake: Any) -> None:
    from motivation_profiles.figures import profiles

    _draw(profiles, snakemake)


def draw_judge(snakemake: Any) -> None:
    from motivation_profiles.figures import judge

    _draw(judge, snakemake)


def draw_steering(snakemake: Any) -> None:
    from motivation_profiles.figures import steering

    _draw(steering, snakemake)


def draw_steering_activations(snakemake: Any) -> None:
    from motivation_profiles.figures import steering_activations

    _draw(steering_activations, snakemake)


def draw_recovery(snakemake: Any) -> None:
    from motivation_profiles.figures import recovery

    _draw(recovery, snakemake)
