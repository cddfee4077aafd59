"""The calibration candidates of the prompt plan (prompts/plan.py): the paper's "direct SDF
variants" derived from the config, or an explicit list."""

from __future__ import annotations

import copy

from conftest import absolutize, load_repo_config

from motivation_profiles.prompts.plan import PromptPlan
from motivation_profiles.sdf.plan import SDFPlan


def _plan(config: dict) -> PromptPlan:
    return PromptPlan.from_config(config, SDFPlan.from_config(config))


def test_paper_config_candidates_are_the_direct_amplify_variants():
    paper = absolutize(load_repo_config("configs/paper.yaml"))
    assert paper["calibration"]["candidates"] is None
    assert _plan(paper).candidates() == ["A1_amp", "A2_amp", "B1_amp", "B2_amp"]
    # with the B.2 sweep on, the weak (indirect) variants are never candidates; strong ones
    # only when `direct` names them
    sweep = copy.deepcopy(paper)
    sweep["sdf"]["strengths"] = ["weak", "standard", "strong"]
    assert _plan(sweep).candidates() == ["A1_amp", "A2_amp", "B1_amp", "B2_amp"]
    sweep["calibration"]["direct"] = ["standard", "strong"]
    assert _plan(sweep).candidates() == ["A1_amp", "A2_amp", "B1_amp", "B2_amp",
                                         "A1_amp-strong", "A2_amp-strong", "B1_amp-strong",
                                         "B2_amp-strong"]
    # an explicit list is kept (restricted to the config's branches)
    sweep["calibration"]["candidates"] = ["A1_sup", "B1_amp-weak"]
    assert _plan(sweep).candidates() == ["A1_sup", "B1_amp-weak"]


def test_direct_levels_without_both_families_fail_the_config_check():
    from motivation_profiles.config.validate import ConfigError, validate_config

    cfg = absolutize(load_repo_config())
    cfg["calibration"]["candidates"] = None
    cfg["calibration"]["direct"] = ["strong"]          # not in sdf.strengths
    try:
        validate_config(cfg)
    except ConfigError as exc:
        assert "calibration.direct" in str(exc)
    else:
        raise AssertionError("a config whose direct levels select nothing was accepted")
