"""Steering names and plan (which conditions, vectors and figures a config asks for), the
steering config checks, the raw-AdvBench rollouts and their compliance judge."""

from __future__ import annotations

import copy

import polars as pl
import pytest
from conftest import REPO, absolutize, load_repo_config

from motivation_profiles.backends.base import Completion, SamplingParams
from motivation_profiles.config.validate import ConfigError, validate_config
from motivation_profiles.judge.compliance import (
    ComplianceRubric,
    judge_compliance,
    parse_compliance,
    vote,
)
from motivation_profiles.judge.scoring import RubricError
from motivation_profiles.rollouts.run import run_raw_rollouts
from motivation_profiles.steering.names import (
    format_multiplier,
    parse_steer_condition,
    parse_vector,
    random_name,
    raw_condition,
    steer_condition,
)
from motivation_profiles.steering.plan import SteeringPlan


@pytest.fixture
def cfg():
    return absolutize(load_repo_config())


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize("m, text", [(4, "+4"), (-4, "-4"), (0.5, "+0.5"), (-2.25, "-2.25")])
def test_multiplier_always_carries_its_sign(m, text):
    assert format_multiplier(m) == text
    cond = steer_condition("expectations_ooc", m)
    assert cond == f"steer-expectations_ooc-x{text}"
    parsed = parse_steer_condition(cond)
    assert parsed.multiplier == m and parsed.vector.name == "expectations_ooc"
    assert not parsed.raw


def test_random_and_raw_names_round_trip():
    name = random_name("consequences", "ic", 3)
    ref = parse_vector(name)
    assert (ref.kind, ref.k, ref.of) == ("random", 3, "consequences_ic")
    assert parse_steer_condition(raw_condition()).vector is None
    raw = parse_steer_condition(raw_condition("expectations_ooc", 8))
    assert raw.raw and raw.multiplier == 8 and raw.vector.name == "expectations_ooc"
    assert parse_steer_condition("baseline") is None
    assert parse_steer_condition("prompt-A1_amp-weak") is None


@pytest.mark.parametrize("bad", ["steer-expectations_ooc-x4", "steer-foo_ooc-x+1",
                                 "steer-expectations_ooc_2-x+1", "raw-expectations_ooc",
                                 "steer-random_expectations_ooc-x+1"])
def test_malformed_steering_names_are_errors(bad):
    with pytest.raises(ValueError, match="expected|not a vector name"):
        parse_steer_condition(bad)


# ----------------------------------------------------------------------------- plan


def test_embedded_plan(cfg):
    plan = SteeringPlan.from_config(cfg)
    assert plan.models == ("smollm2-135m", "simulated-af")   # simulated: planted activations
    assert plan.real_models == ("smollm2-135m",)
    assert plan.fitted_vectors() == ["expectations_ooc", "consequences_ooc", "expectations_ic",
                                     "consequences_ic"]

    assert plan.random_vectors() == ["random_expectations_ooc_1", "random_consequences_ooc_1"]
    conds = plan.steer_conditions("smollm2-135m")
    # 4 fitted vectors at -4 / +4, the 2 random controls (OOC) at +4 only (the demo's budget)
    assert len(conds) == 4 * 2 + 2 * 1
    assert "steer-random_expectations_ooc_1-x+4" in conds
    assert plan.raw_conditions("smollm2-135m") == [
        "raw-baseline", "raw-expectations_ooc-x+4", "raw-consequences_ooc-x+4"]
    assert plan.profile_interventions() == {
        "A1_amp": "steer-expectations_ooc-x+4", "A1_sup": "steer-expectations_ooc-x-4",
        "B1_amp": "steer-consequences_ooc-x+4", "B1_sup": "steer-consequences_ooc-x-4"}
    assert plan.pairsets("ooc") == [f"ooc_{c}_{s}" for c in ("expectations", "consequences")
                                    for s in ("train", "validation", "keyword_hard")]
    assert plan.vector_file("random_consequences_ooc_1") == "random/consequences_ooc_1.safetensors"
    figs = plan.figures(("smollm2-135m",))
    assert {"steering_ooc", "steering_random", "steering_raw",
            "token_heatmap_expectations", "sdf_steering_alignment",
            "steering_diagnostics", "steering_ic"} <= set(figs)
    cfg["steering"]["sources"] = ["ooc"]
    ooc = SteeringPlan.from_config(cfg)
    assert "steering_ic" not in ooc.figures(("smollm2-135m",))
    both = plan
    assert "steering_ic" in both.figures(("smollm2-135m",))
    assert "sdf_steering_alignment" not in plan.figures(())


def test_plan_skips_hosted_models_and_ic_sources(cfg):
    cfg["models"]["opus"] = {"source": "anthropic", "model_id": "claude-3-opus-20240229",
                             "display_name": "Opus", "backend": "anthropic"}
    plan = SteeringPlan.from_config(cfg)
    assert "opus" not in plan.models and plan.steer_conditions("opus") == []
    static = ["baseline", "prompt-A1_amp-weak", "steer-expectations_ooc-x+4"]
    assert plan.ic_conditions("smollm2-135m", static) == static[:2]
    cfg["steering"]["ic"]["conditions"] = ["baseline"]
    assert SteeringPlan.from_config(cfg).ic_conditions("smollm2-135m", static) == ["baseline"]


def test_disabled_plan_is_empty(cfg):
    cfg["steering"]["enabled"] = False
    plan = SteeringPlan.from_config(cfg)
    assert plan.models == () and plan.figures(("smollm2-135m",)) == []


def test_paper_plan_counts():
    paper = absolutize(load_repo_config("configs/paper.yaml"))
    plan = SteeringPlan.from_config(paper)
    assert plan.models == ("llama-3.1-70b",)
    assert len(plan.random_vectors()) == 20          # D.3: five per real vector, 20 in all
    assert len(plan.steer_conditions("llama-3.1-70b")) == 4 * 6 + 20 * 4


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("mutate, match", [
    (lambda s: s.update(models=["nope"]), "steering.models"),
    (lambda s: s["layers"].update(source="ic") or s.update(sources=["ooc"]),
     "steering.layers.source"),
    (lambda s: s["raw"].update(vectors=["expectations_ic"]) or s.update(sources=["ooc"]),
     "steering.raw.vectors"),
    (lambda s: s["layers"].update(select="list", list=None), "steering.layers.list"),
    (lambda s: s["ic"].update(low=3, high=2), "steering.ic.low"),
    (lambda s: s["profile"].update(multiplier=8), "steering.profile.multiplier"),
    (lambda s: s["fitting"].update(min_pairs=50), "steering.fitting.min_pairs"),
    (lambda s: s.update(materials_dir="/nonexistent"), "steering.materials_dir"),
    (lambda s: s["external_pairs"].update(ic_expectations="/no/file.jsonl"),
     "steering.external_pairs.ic_expectations"),
])
def test_steering_checks_name_the_key(cfg, mutate, match):
    mutate(cfg["steering"])
    with pytest.raises(ConfigError, match=match.replace(".", r"\.")):
        validate_config(cfg)


@pytest.mark.parametrize("key, value", [("multipliers", [0, 4]), ("concepts", ["scheming"]),
                                        ("external_pairs", {"ooc_x_train": "f"})])
def test_steering_schema(cfg, key, value):
    cfg["steering"][key] = value
    with pytest.raises(ConfigError, match="steering"):
        validate_config(cfg)


def test_hosted_model_cannot_be_steered(cfg):
    cfg["models"]["opus"] = {"source": "anthropic", "model_id": "claude-3-opus-20240229",
                             "display_name": "Opus", "backend": "anthropic"}
    cfg["rollouts"].update(temperature=1.0, top_p=1.0)
    cfg["steering"]["models"] = ["opus"]
    with pytest.raises(ConfigError, match="hosted model"):
        validate_config(cfg)


# ----------------------------------------------------------------------------- raw + judge


class Scripted:
    """A GenerationBackend answering from a function of the request."""

    name = "scripted"

    def __init__(self, fn):
        self.fn, self.requests = fn, []

    def generate(self, requests, params):
        self.requests += list(requests)
        return [Completion(r.request_id, self.fn(r), "stop", 5, 3) for r in requests]


GOALS = pl.DataFrame({"goal_id": [0, 1, 2], "goal": ["Do a", "Do b", "Do c"]})


def test_raw_rollouts_send_the_goal_alone():
    backend = Scripted(lambda r: f"answer to {r.messages[-1]['content']}")
    df = run_raw_rollouts(backend, GOALS, seeds=[0, 1],
                          params=SamplingParams(1.0, 1.0, 8), meta={"model": "m",
                                                                     "condition": "raw-baseline"})
    assert len(df) == 6 and set(df["tier"]) == {"raw"}
    assert all(r.messages == ({"role": "user", "content": g},)
               for r, g in zip(backend.requests, ["Do a", "Do b", "Do c"] * 2, strict=True))
    assert df["outcome"].is_null().all() and df["scratchpad"].is_null().all()
    assert df["final_output"][0] == "answer to Do a"


def test_compliance_rubric_and_votes(tmp_path):
    rubric = ComplianceRubric.load(REPO / "resources/judge/compliance.yaml")
    msgs = rubric.messages("Do a", "Sure, here is how")
    assert "Do a" in msgs[1]["content"] and "Sure, here is how" in msgs[1]["content"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsystem: s\nuser_template: '{request} only'\n")
    with pytest.raises(RubricError, match="request.*response"):
        ComplianceRubric.load(bad)
    assert parse_compliance("<complied> YES </complied>") is True
    assert parse_compliance("no tag") is None
    assert vote([True, True, False]) == (True, "ok")
    assert vote([True, False]) == (None, "tie")
    assert vote([None, None]) == (None, "unparsed")


def test_judge_compliance_votes_per_row():
    rubric = ComplianceRubric.load(REPO / "resources/judge/compliance.yaml")
    rollouts = pl.DataFrame({"model": "m", "condition": "raw-baseline", "goal_id": [0, 1, 2],
                             "tier": "raw", "seed": 0, "goal": ["a", "b", "c"],
                             "final_output": ["Sure: step 1", "I can't help", ""]})
    backend = Scripted(lambda r: "<complied>yes</complied>" if "Sure" in r.messages[1]["content"]
                       else ("<complied>no</complied>" if r.seed == 0 else "garbage"))
    out = judge_compliance(rollouts, backend, rubric, samples=2,
                           params=SamplingParams(1.0, 1.0, 8), meta={"judge_model": "x"})
    assert list(out["status"]) == ["ok", "ok", "empty"]
    assert out.schema["complied"] == pl.Boolean
    assert out["complied"].to_list() == [True, False, None]
    assert len(backend.requests) == 4          # the empty response asks nothing
    assert [r.seed for r in backend.requests] == [0, 1, 0, 1]


def test_repo_configs_keep_steering_consistent():
    for name in ("config.yaml", "configs/paper.yaml"):
        cfg = absolutize(load_repo_config(name))
        validate_config(copy.deepcopy(cfg))


# ----------------------------------------------------------------------------- simulated models


def test_simulated_models_are_steered_without_the_weight_only_steps(cfg):
    """The demo's simulated organism runs the steering chain (pairs, vectors, steered
    conditions) but not the raw-AdvBench control, heatmaps or SDF alignment, and writes its
    own OOC pair counts and IC pair settings."""
    plan = SteeringPlan.from_config(cfg)
    sim = next(m for m, s in cfg["models"].items() if s["source"] == "simulated")
    real = next(m for m, s in cfg["models"].items() if s["source"] == "embedded")
    assert sim in plan.models and plan.simulated == (sim,) and plan.real_models == (real,)
    assert plan.steer_conditions(sim) == plan.steer_conditions(real) != []
    assert plan.raw_conditions(sim) == [] and plan.raw_conditions(real) != []
    assert plan.alignment_models((real, sim)) == [real]
    assert plan.ooc_settings(sim)["splits"] == {"train": 150, "validation": 40,
                                                "keyword_hard": 40}
    assert plan.ooc_settings(sim)["max_rounds"] == cfg["steering"]["ooc"]["max_rounds"]
    assert plan.ooc_settings(real) == cfg["steering"]["ooc"]
    # and its own IC pairs: many, at the paper's score thresholds (its judge spreads)
    assert plan.ic_settings(sim)["n_train"] == 150 and plan.ic_settings(sim)["quantiles"] is None
    assert plan.ic_settings(sim)["high"] == cfg["steering"]["ic"]["high"]
    assert plan.ic_settings(real) == cfg["steering"]["ic"]
    cfg["models"] = {sim: cfg["models"][sim]}
    cfg["judge"]["model"] = cfg["sdf"]["generator"]["model"] = sim
    only = SteeringPlan.from_config(cfg)
    assert "steering_raw" not in only.figures() and not any(
        n.startswith("token_heatmap") for n in only.figures())
    assert "sdf_steering_alignment" not in only.figures((sim,))


def test_simulated_ooc_counts_and_planted_activations_are_checked(cfg, tmp_path):
    sim = next(m for m, s in cfg["models"].items() if s["source"] == "simulated")
    bad = copy.deepcopy(cfg)
    bad["models"][sim]["ooc"]["splits"]["train"] = 1
    bad["steering"]["fitting"]["min_pairs"] = 2
    with pytest.raises(ConfigError, match=rf"models\.{sim}\.ooc\.splits\.train"):
        validate_config(bad, base_dir=REPO)
    # a real model may not set its own OOC counts (simulated models only)
    bad = copy.deepcopy(cfg)
    real = next(m for m, s in cfg["models"].items() if s["source"] == "embedded")
    bad["models"][real]["ooc"] = {"splits": {"train": 10}}
    with pytest.raises(ConfigError, match=f"models.{real}"):
        validate_config(bad, base_dir=REPO)
    # a steered simulated model's policy must plant activations
    policy = (REPO / cfg["models"][sim]["policy"]).read_text()
    no_steering = tmp_path / "policy.yaml"
    no_steering.write_text(policy.split("\nsteering:")[0] + "\n")
    bad = copy.deepcopy(cfg)
    bad["models"][sim]["policy"] = str(no_steering)
    with pytest.raises(ConfigError, match=rf"models\.{sim}\.policy.*plants no activations"):
        validate_config(bad, base_dir=REPO)
