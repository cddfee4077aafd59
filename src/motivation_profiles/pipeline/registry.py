"""Rule name -> entry point, the one table both the rules and the dispatcher read.

``workflow/scripts/run.py`` (every rule's ``script:``) calls ``entry_point(rule)`` to find the
function to run; ``workflow/rules/common.smk`` declares ``code_inputs(rule)`` (derived by
:mod:`motivation_profiles.pipeline.code_inputs` from that function's imports) as the rule's
``code`` input. A rule missing here fails at DAG build with its name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from motivation_profiles.pipeline.code_inputs import PACKAGE, code_files

# module of motivation_profiles.pipeline -> the rules whose entry point has the rule's name
_BY_NAME = {
    "models": ("prepare_model", "prepare_organism"),
    "goals": ("advbench", "goals", "goals_sized"),
    "rollouts": ("rollouts", "system_prompt"),
    "metrics": ("metrics", "metrics_table"),
    "judge": ("judge",),
    "browser": ("browser",),
    "sdf": ("generate_documents", "sdf_dataset", "train_lora", "belief_check", "sdf_profile"),
    "profiles": ("prompt_profile", "calibration_select", "calibration", "profiles"),
    "report": ("departures",),
    "steering": ("ooc_pairs", "ic_pairs", "activations", "fit_vectors", "random_vectors",
                 "steering_layers", "vector_norms", "judge_raw", "steering_summary", "raw_summary",
                 "steering_profile", "token_cosines", "sdf_alignment"),
    "validation": ("planted_recovery",),
}

# figure name -> module of motivation_profiles.figures that draws it (rule figure_<name>)
FIGURE_MODULES = {
    "baseline_compliance": "baseline",
    "sdf_profile": "sdf", "sdf_strength_sweep": "sdf", "sdf_role_play": "sdf",
    "profile_plane": "profiles", "prompt_strength_ablation": "profiles",
    "prompt_calibration": "profiles", "calibration_signal": "profiles",
    "judge_scores": "judge",
    "steering_diagnostics": "steering", "steering_ooc": "steering", "steering_ic": "steering",
    "steering_random": "steering", "steering_raw": "steering",
    "token_heatmap_expectations": "steering_activations",
    "token_heatmap_consequences": "steering_activations",
    "sdf_steering_alignment": "steering_activations",
    "planted_recovery": "recovery",
}

ENTRY_POINTS: dict[str, tuple[str, str]] = {
    rule: (f"{PACKAGE}.pipeline.{module}", rule)
    for module, rules in _BY_NAME.items() for rule in rules
}
# the baseline figure rule predates the figure_<name> naming
_FIGURE_RULES = {"figure_baseline": "baseline_compliance"}


def figure_of(rule: str) -> str | None:
    """The figure a ``figure_*`` rule draws, or None for other rules."""
    if rule in _FIGURE_RULES:
        return _FIGURE_RULES[rule]
    if rule.startswith("figure_") and rule[len("figure_"):] in FIGURE_MODULES:
        return rule[len("figure_"):]
    return None


def entry_point_name(rule: str) -> tuple[str, str]:
    """(module, function) of a rule's entry point."""
    if rule in ENTRY_POINTS:
        return ENTRY_POINTS[rule]
    figure = figure_of(rule)
    if figure is not None:
        return f"{PACKAGE}.pipeline.figures", f"draw_{FIGURE_MODULES[figure]}"
    raise KeyError(f"rule {rule!r} has no entry point: add it to "
                   f"motivation_profiles/pipeline/registry.py")


def entry_point(rule: str) -> Callable[[Any], None]:
    """The function a rule's job runs."""
    module, function = entry_point_name(rule)
    return getattr(importlib.import_module(module), function)


@cache
def code_inputs(rule: str) -> list[str]:
    """Files of every package module the rule's entry point can run (its ``code`` input)."""
    return [str(f) for f in code_files(*entry_point_name(rule))]


def relative_code_inputs(rule: str, root: str | Path) -> list[str]:
    """:func:`code_inputs` relative to ``root`` (for messages and tests)."""
    return [str(Path(f).relative_to(root)) for f in code_inputs(rule)]
