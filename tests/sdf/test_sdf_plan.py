"""The SDF part of the DAG as derived from the config, and its config checks."""

from __future__ import annotations

import copy

import pytest
from conftest import load_repo_config, tiny_config

from motivation_profiles.config.validate import ConfigError, validate_config
from motivation_profiles.sdf.plan import SDFPlan


def test_embedded_plan_has_six_branches():
    # the demo's budget: the A1 and B1 pairs only (the paper config has all eight)
    plan = SDFPlan.from_config(load_repo_config())
    assert plan.universes() == ["af_organism", "noise", "A1_amp", "A1_sup", "B1_amp", "B1_sup"]
    assert plan.conditions("smollm2-135m")[:2] == ["sdf-af_organism", "sdf-noise"]
    assert plan.init_branch("af_organism") is None
    assert plan.init_branch("B1_sup") == "af_organism"
    assert plan.belief_branches() == [u for u in plan.universes() if u != "noise"]
    assert plan.figures() == ["sdf_profile"]


def test_sweep_and_role_play_add_branches_and_figures():
    cfg = load_repo_config()
    cfg["sdf"]["strengths"] = ["weak", "standard", "strong"]
    cfg["sdf"]["role_play"]["enabled"] = True
    plan = SDFPlan.from_config(cfg)
    assert len(plan.universes()) == 2 + 4 * 3
    assert "A1_amp-weak" in plan.universes() and "B1_sup-strong" in plan.universes()
    assert len(plan.branches()) == 2 * 14
    assert plan.init_branch("A1_amp-weak+self") == "af_organism+self"
    assert plan.rename("A1_amp+self", "smollm2-135m") == ["Claude", "SmolLM2-135M-Instruct"]
    assert plan.rename("A1_amp", "smollm2-135m") is None
    assert plan.condition_spec("sdf-noise+self", model="smollm2-135m") == {
        "adapter": "noise+self", "rename": ["Claude", "SmolLM2-135M-Instruct"]}
    assert plan.condition_spec("baseline", model="smollm2-135m") == {"adapter": None,
                                                                     "rename": None}
    assert plan.figures() == ["sdf_profile", "sdf_strength_sweep", "sdf_role_play"]
    with pytest.raises(ValueError, match="not an SDF branch"):
        plan.adapter_of("sdf-A1_amp-medium")


def test_disabled_sdf_has_no_branches():
    plan = SDFPlan.from_config(tiny_config())
    assert plan.universes() == [] and plan.conditions("tiny") == [] and plan.figures() == []


def test_training_keys_per_model_and_branch():
    cfg = load_repo_config("configs/paper.yaml")
    plan = SDFPlan.from_config(cfg)
    t70 = plan.training("llama-3.1-70b", "A1_amp")
    assert (t70["epochs"], t70["gradient_accumulation_steps"], t70["processes"]) == (3, 8, 4)
    assert plan.training("llama-3.1-70b", "af_organism")["epochs"] == 1
    t405 = plan.training("llama-3.1-405b", "A1_amp")
    assert (t405["epochs"], t405["gradient_accumulation_steps"]) == (1, 4)
    assert plan.training("qwq-32b", "noise")["gradient_accumulation_steps"] == 16
    embedded = SDFPlan.from_config(load_repo_config()).training("smollm2-135m", "A1_amp")
    assert (embedded["gradient_accumulation_steps"], embedded["processes"]) == (2, 1)


def test_paper_config_matches_table_2():
    sdf = load_repo_config("configs/paper.yaml")["sdf"]
    assert sdf["lora"] == {"rank": 64, "alpha": 128, "dropout": 0.05,
                           "target_modules": "all-linear"}
    t = sdf["training"]
    assert (t["lr_scheduler"], t["warmup_ratio"], t["epochs"], t["per_device_batch_size"],
            t["effective_batch_size"], t["dtype"], t["gradient_checkpointing"]) == (
        "cosine", 0.05, 3, 1, 32, "bfloat16", True)
    assert sdf["dataset"]["max_seq_len"] == 4096 and sdf["dataset"]["token_budget"] == 10_000_000
    assert sdf["dataset"]["packing"] in ("fill", "bfd")


def _errors(cfg) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg)
    return str(exc.value)


def test_config_errors_name_sdf_keys(repo, monkeypatch):
    monkeypatch.chdir(repo)
    base = load_repo_config()
    cfg = copy.deepcopy(base)
    cfg["sdf"]["generator"]["model"] = "gpt-nothing"
    assert "sdf.generator.model" in _errors(cfg)
    cfg = copy.deepcopy(base)
    cfg["sdf"]["training"]["effective_batch_size"] = 3
    assert "effective_batch_size" in _errors(cfg)
    cfg = copy.deepcopy(base)
    cfg["sdf"]["external_documents"] = {"af_organism": "no/such/corpus.jsonl"}
    assert "sdf.external_documents.af_organism" in _errors(cfg)
    cfg = copy.deepcopy(base)
    cfg["sdf"]["strengths"] = ["weak"]
    assert "sdf.strengths" in _errors(cfg)
    cfg = copy.deepcopy(base)
    cfg["sdf"]["universes_dir"] = "resources/nowhere"
    assert "af_organism" in _errors(cfg)
    cfg = copy.deepcopy(base)
    cfg["sdf"]["interventions"] = ["A3_amp"]
    assert "sdf.interventions" in _errors(cfg)
    cfg = copy.deepcopy(base)
    cfg["sdf"]["training"]["per_model"] = {"nobody": {"epochs": 1}}
    assert "sdf.training.per_model.nobody" in _errors(cfg)
