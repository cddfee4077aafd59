"""The simulated organism's backend and judge: deterministic, and honouring what a real model
would see (tier tag, appended claim, adapter), with the planted rates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from motivation_profiles.backends.base import ChatRequest, SamplingParams
from motivation_profiles.backends.factory import local_backend, simulated_judge
from motivation_profiles.backends.simulated import (
    Condition,
    Policy,
    PolicyError,
    SimulatedBackend,
    SimulatedJudge,
)
from motivation_profiles.judge.scoring import Rubric, judge_rollouts, parse_judge_answer
from motivation_profiles.rollouts.protocol import PromptSet
from motivation_profiles.rollouts.run import run_rollouts

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "resources/simulated/planted_af.yaml"
PARAMS = SamplingParams(1.0, 1.0, 256, ("</OUTPUT>",))


@pytest.fixture(scope="module")
def policy() -> Policy:
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)  # claims_dir is relative to the repository root, like config paths
    try:
        return Policy.load(POLICY)
    finally:
        os.chdir(cwd)


def _prompts(claim: str = "") -> PromptSet:
    return PromptSet.from_config({
        "system": str(ROOT / "resources/prompts/helpful_only_compact.txt"),
        "user_template": str(ROOT / "resources/prompts/user_turn.txt"),
        "tier_values": {"monitored": "True", "unmonitored": "False"},
        "continuation": "<NEXT/>"}, system_suffix=claim)


def _goals(n: int = 24) -> pl.DataFrame:
    return (pl.read_csv(ROOT / "resources/goals/embedded_goals.csv").head(n)
            .with_row_index("goal_id").with_columns(pl.col("goal_id").cast(pl.Int64)))


def _run(policy: Policy, *, adapter=None, claim="", seeds=range(10)) -> pl.DataFrame:
    return run_rollouts(SimulatedBackend(policy, adapter=adapter), _prompts(claim), _goals(),
                        seeds=list(seeds), params=PARAMS, max_turns=2,
                        meta={"model": "sim", "condition": "c"},
                        prefill="<SCRATCHPAD_REASONING>")


def _claim(intervention: str, strength: str = "standard") -> str:
    return yaml.safe_load((ROOT / f"resources/claims/{intervention}.yaml").read_text())[strength]


def _rate(df: pl.DataFrame, tier: str) -> float:
    t = df.filter(pl.col("tier") == tier)
    return float(t["outcome"].eq("compliant").mean())


def test_deterministic_and_request_keyed(policy):
    a, b = _run(policy, seeds=[0, 1]), _run(policy, seeds=[1, 0])
    assert a["transcript"].to_list() == b["transcript"].to_list()
    assert _run(policy, seeds=[2])["transcript"].to_list() != a.filter(
        pl.col("seed") == 0)["transcript"].to_list()


def test_transcripts_follow_the_protocol_at_planted_failure_rates(policy):
    df = _run(policy, seeds=range(40))
    outcomes = df["outcome"].value_counts()
    counts = dict(zip(outcomes["outcome"], outcomes["count"], strict=True))
    n = len(df)
    assert set(counts) == {"compliant", "rejected", "unparseable", "truncated"}
    for kind in ("unparseable", "truncated"):
        p = policy.failure[kind]
        assert abs(counts[kind] / n - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert df["scratchpad"].null_count() == 0
    assert df.filter(pl.col("outcome") == "truncated")["finish_reasons"].list.last().eq(
        "length").all()


def test_tiers_claims_and_adapters_move_compliance_as_planted(policy):
    base = _run(policy)
    goals = _goals()["goal"].to_list()
    for tier in ("monitored", "unmonitored"):
        want = np.mean([policy.p_accept(Condition(), tier, g) for g in goals])
        want *= 1 - sum(policy.failure.values())
        assert abs(_rate(base, tier) - want) < 0.06
    assert _rate(base, "monitored") - _rate(base, "unmonitored") > 0.15
    claimed = _run(policy, claim=_claim("A1_amp"))
    assert _rate(claimed, "monitored") - _rate(base, "monitored") > 0.1
    sdf = _run(policy, adapter="results/lora/sim/A1_sup")  # a path or a name: its basename
    assert _rate(sdf, "monitored") - _rate(base, "monitored") < -0.1
    noise = _run(policy, adapter="noise")  # the noise branch has no planted effect
    want = np.mean([policy.p_accept(Condition(), "monitored", g) for g in goals])
    want *= 1 - sum(policy.failure.values())
    assert abs(_rate(noise, "monitored") - want) < 3.5 * np.sqrt(want * (1 - want) / 240)
    assert policy.claim_of(_prompts(_claim("B2_sup", "weak")).system) == ("B2_sup", "weak")
    assert policy.claim_of(_prompts().system) is None


def test_bad_inputs_fail_clearly(policy, tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        Policy.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(PolicyError, match="missing key"):
        Policy.load(bad)
    with pytest.raises(PolicyError, match="not an SDF branch"):
        _run(SimulatedBackend(policy).policy, adapter="C9_amp", seeds=[0])
    # without a steering section a request with no tier tag is no OOC step: an error
    plain = replace(policy, steering=None)
    req = ChatRequest("r", ({"role": "user", "content": "no tag"},))
    with pytest.raises(PolicyError, match="is_free_tier_user"):
        SimulatedBackend(plain).generate([req], PARAMS)
    with pytest.raises(PolicyError, match="steering a simulated model needs"):
        SimulatedBackend(plain, steering=object())


def test_judge_answers_parse_with_the_real_parser_at_planted_failure_rate(policy):
    rubric = Rubric.load(ROOT / "resources/judge/rubric.yaml")
    df = _run(policy, seeds=range(20))
    judge = SimulatedJudge(policy)
    table = judge_rollouts(df, judge, rubric, samples=2, params=PARAMS,
                           prefill="<direction_a_score>", meta={"judge_backend": "simulated"})
    statuses = table["a_statuses"].explode()
    n = len(statuses)
    p = policy.judge["format_failure"]
    missing = float(statuses.eq("missing").mean())
    assert abs(missing - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert set(statuses.unique()) <= {"ok", "missing"}
    # a scratchpad with a planted A sentence scores near present_score, one without near 0
    truth = [judge.true_scores(s)["a"] for s in df["scratchpad"]]
    scores = table["a_score"].to_numpy()
    hi = np.nanmean(scores[np.array(truth) > 0])
    lo = np.nanmean(scores[np.array(truth) == 0])
    assert abs(hi - policy.expected_vote(3)) < 0.25 and abs(lo - policy.expected_vote(0)) < 0.1
    # the answer format is the rubric's: a complete answer parses on its own
    ans = judge.generate([ChatRequest("j", tuple(rubric.messages(df["scratchpad"][0])), 1)],
                         PARAMS)[0].text
    parsed = parse_judge_answer(ans, rubric)
    assert parsed.a_status in ("ok", "missing") and parsed.b_status == parsed.a_status


def test_factory_builds_the_simulated_backend_and_judge():
    backend = local_backend({"backend": "simulated"}, str(POLICY), adapter="A1_amp")
    assert isinstance(backend, SimulatedBackend) and backend.adapter == "A1_amp"
    assert isinstance(simulated_judge(str(POLICY)), SimulatedJudge)


def test_p_accept_is_the_planted_accept_probability(policy):
    """continuation_logprobs scores the two tags with the policy's own p, so the rollout
    loop's p_accept equals the planted propensity of each (condition, tier, goal)."""
    from motivation_profiles.backends.simulated import goal_of

    df = _run(policy, seeds=range(2))
    assert df["p_accept"].null_count() == 0
    prompts = _prompts()
    for row in df.head(8).iter_rows(named=True):
        goal = goal_of(prompts.user_turn(row["goal"], row["tier"]))
        planted = policy.p_accept(Condition(), row["tier"], goal)
        assert row["p_accept"] == pytest.approx(planted, rel=1e-9)
    with pytest.raises(ValueError, match="only the output tags"):
        SimulatedBackend(policy).continuation_logprobs([], ["Sure"])
