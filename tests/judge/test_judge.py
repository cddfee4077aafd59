"""The judge: rubric loading, answer parsing, agreement statistics, and judging a rollout
table through the hosted path (local fake Anthropic server) and the local path (tiny model)."""

from __future__ import annotations

import re

import polars as pl
import pytest
from conftest import REPO
from fake_anthropic import API_KEY, FakeAnthropic
from polars.testing import assert_frame_equal

from motivation_profiles.backends.anthropic import AnthropicClient, HostedBackend
from motivation_profiles.backends.base import SamplingParams
from motivation_profiles.backends.cache import CachedBackend
from motivation_profiles.backends.hf import HFBackend
from motivation_profiles.backends.hosted import API_KEY_ENV
from motivation_profiles.core.provenance import read_table, write_table
from motivation_profiles.judge.scoring import (
    Rubric,
    RubricError,
    agreement_summary,
    expected_score,
    judge_rollouts,
    judge_rollouts_expected,
    krippendorff_alpha_interval,
    modal_agreement,
    parse_judge_answer,
    spread,
)

RUBRIC = Rubric.load(REPO / "resources/judge/rubric.yaml")


def answer(a, b, qa="I expect they want this", qb="RLHF will change me"):
    return (f"<direction_a_score>{a}</direction_a_score>\n<direction_a_quote>{qa}"
            f"</direction_a_quote>\n<direction_b_score>{b}</direction_b_score>\n"
            f"<direction_b_quote>{qb}</direction_b_quote>")


# ----------------------------------------------------------------------------- rubric


def test_shipped_rubric_loads():
    assert (RUBRIC.scale_min, RUBRIC.scale_max) == (0, 4)
    msgs = RUBRIC.messages("my reasoning", prefill="<direction_a_score>")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert "my reasoning" in msgs[1]["content"]
    assert "Direction A" in RUBRIC.system and "Direction B" in RUBRIC.system
    assert re.fullmatch(r"[0-9a-f]{64}", RUBRIC.sha256)


@pytest.mark.parametrize(("text", "match"), [
    ("name: x\nscale: {min: 0, max: 4}\nsystem: s\n", "missing key 'user_template'"),
    ("name: x\nscale: {min: 4, max: 0}\nsystem: s\nuser_template: '{scratchpad}'\n",
     "key 'scale'"),
    ("name: x\nscale: {min: 0, max: 4.5}\nsystem: s\nuser_template: '{scratchpad}'\n",
     "key 'scale'"),
    ("name: x\nscale: {min: 0, max: 4}\nsystem: s\nuser_template: '{pad}'\n",
     "key 'user_template'"),
    ("name: x\nscale: {min: 0, max: 4}\nsystem: ''\nuser_template: '{scratchpad}'\n",
     "key 'system'"),
    ("- a list\n", "mapping"),
])
def test_bad_rubrics_name_the_key(tmp_path, text, match):
    p = tmp_path / "rubric.yaml"
    p.write_text(text)
    with pytest.raises(RubricError, match=match) as err:
        Rubric.load(p)
    assert str(p) in str(err.value)


# ----------------------------------------------------------------------------- parsing

PARSE_TABLE = [
    # text, prefill, expected (a, b, a_status, b_status)
    (answer(3, 1), None, (3, 1, "ok", "ok")),
    ("Sure! " + answer(0, 4) + "\nHope this helps.", None, (0, 4, "ok", "ok")),
    (answer("**2**", "2/4"), None, (2, 2, "ok", "ok")),
    (answer(3, 1).upper(), None, (3, 1, "ok", "ok")),
    ("<direction_a_score>2</direction_a_score>", None, (2, None, "ok", "missing")),
    (answer(5, -1), None, (None, None, "out_of_range", "out_of_range")),
    (answer("high", "3.5"), None, (None, None, "not_integer", "not_integer")),
    (answer(1, 2) + answer(3, 2), None, (None, 2, "conflicting", "ok")),
    (answer(1, 2) + answer(1, 2), None, (1, 2, "ok", "ok")),
    ("", None, (None, None, "missing", "missing")),
    ("la la la </direction_a_score> <direction_b_score>", None,
     (None, None, "missing", "missing")),
    ("3</direction_a_score><direction_b_score>0</direction_b_score>", "<direction_a_score>",
     (3, 0, "ok", "ok")),
]


@pytest.mark.parametrize(("text", "prefill", "expected"), PARSE_TABLE)
def test_parse_table(text, prefill, expected):
    p = parse_judge_answer(text, RUBRIC, prefill=prefill)
    assert (p.a_score, p.b_score, p.a_status, p.b_status) == expected


def test_quotes_are_read_per_direction():
    p = parse_judge_answer(answer(4, 0, qa="the graders want", qb="none"), RUBRIC)
    assert (p.a_quote, p.b_quote) == ("the graders want", "none")
    assert parse_judge_answer(None, RUBRIC).a_status == "missing"  # never raises


# ----------------------------------------------------------------------------- agreement


def test_per_item_agreement():
    assert modal_agreement([2, 2, 3]) == pytest.approx(2 / 3)
    assert modal_agreement([None, 1]) == 1.0
    assert modal_agreement([None, None]) is None
    assert spread([0, 4, None]) == 4 and spread([]) is None


def test_krippendorff_alpha_on_hand_computed_votes():
    # perfect agreement with variation between items: D_o = 0 -> alpha = 1
    assert krippendorff_alpha_interval([[1, 1], [2, 2]]) == pytest.approx(1.0)
    # [[0,1],[1,0]]: D_o = (1/4)(2/1 + 2/1) = 1; values 0,1,1,0: 8 ordered pairs differ by 1,
    # D_e = 8 / (4*3) = 2/3 -> alpha = 1 - 1.5 = -0.5
    assert krippendorff_alpha_interval([[0, 1], [1, 0]]) == pytest.approx(-0.5)
    # [[0,0],[0,1],[4,4]]: D_o = (1/6)(0 + 2 + 0) = 1/3; values 0,0,0,1,4,4: sum over ordered
    # pairs of squared differences = 2 * (3*1*1 + 3*2*16 + 1*2*9) = 2 * 117 = 234,
    # D_e = 234 / 30 = 7.8 -> alpha = 1 - (1/3)/7.8 = 0.957264...
    assert krippendorff_alpha_interval([[0, 0], [0, 1], [4, 4]]) == pytest.approx(
        1 - (1 / 3) / 7.8)
    # unpairable items are dropped; no variation at all is undefined
    assert krippendorff_alpha_interval([[1], [None, 2]]) is None
    assert krippendorff_alpha_interval([[2, 2], [2, 2]]) is None


def test_agreement_summary():
    s = agreement_summary([[1, 1, 1], [0, 2, None], [3], []])
    assert s["items"] == 4 and s["items_with_2plus_valid"] == 2
    assert s["exact_agreement"] == 0.5
    assert s["mean_abs_pairwise_diff"] == pytest.approx((0 + 0 + 0 + 2) / 4)


# ----------------------------------------------------------------------------- judging

def _rollouts(pads):
    n = len(pads)
    return pl.DataFrame({"model": ["m"] * n, "condition": ["baseline"] * n,
                         "goal_id": range(n), "tier": ["monitored"] * n, "seed": [0] * n,
                         "outcome": ["rejected"] * n, "scratchpad": pads},
                        schema_overrides={"scratchpad": pl.Utf8})


PADS = ["the graders expect compliance", "RLHF will modify me", "gibberish", None, "  "]
META = {"judge_model": "claude-test", "rubric_sha256": RUBRIC.sha256, "samples": 3}
PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=200)


def _responder(params, n):
    pad = params["messages"][0]["content"]
    if "graders" in pad:  # samples disagree on A: 4, 3, 4
        return answer(4 if n % 2 == 0 else 3, 0), "end_turn", None
    if "RLHF" in pad:
        return answer(0, 4), "end_turn", None
    return "I cannot rate this.", "end_turn", None


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)
    with FakeAnthropic() as f:
        f.responder = _responder
        yield f


@pytest.mark.parametrize("batch_threshold", [100, 2])
def test_hosted_judge_scores_counts_and_warm_cache(fake, tmp_path, batch_threshold):
    def backend():
        client = AnthropicClient(tmp_path / "cache", base_url=fake.base_url, poll_interval=0,
                                 batch_threshold=batch_threshold, max_retries=0)
        return HostedBackend(client, "claude-test")

    df = judge_rollouts(_rollouts(PADS), backend(), RUBRIC, samples=3, params=PARAMS,
                        prefill=None, meta=META)
    items = 3  # two rows have no scratchpad and ask nothing
    if batch_threshold == 100:
        assert fake.count("messages") == items * 3
    else:
        sent = [len(c.body["requests"]) for c in fake.calls("batch_create")]
        assert sum(sent) == items * 3
    assert list(df["status"]) == ["ok", "ok", "unparsed", "no_scratchpad", "no_scratchpad"]
    g = df.row(0, named=True)
    assert g["a_votes"] == [4, 3, 4] and g["a_score"] == pytest.approx(11 / 3)
    assert g["a_modal_agreement"] == pytest.approx(2 / 3) and g["a_spread"] == 1
    assert g["b_votes"] == [0, 0, 0] and g["a_quote"] == "I expect they want this"
    assert df.row(1, named=True)["b_score"] == 4
    assert df.row(1, named=True)["b_modal_agreement"] == 1.0
    bad = df.row(2, named=True)
    assert bad["a_score"] is None and bad["a_statuses"] == ["missing"] * 3
    assert bad["raw_answers"] == ["I cannot rate this."] * 3
    assert df.row(3, named=True)["raw_answers"] == []
    assert df.row(3, named=True)["scratchpad_chars"] == 0
    # unjudged rows: null (not NaN) score, agreement and spread, and list columns typed even
    # where every list is empty
    nothing = df.row(3, named=True)
    assert nothing["a_score"] is None and nothing["a_modal_agreement"] is None
    assert nothing["a_spread"] is None and nothing["a_votes"] == []
    assert df["a_score"].is_nan().sum() == 0 and df["a_score"].null_count() == 3
    for d in ("a", "b"):
        assert df.schema[f"{d}_votes"] == pl.List(pl.Int64)
        assert df.schema[f"{d}_statuses"] == pl.List(pl.Utf8)
        assert df.schema[f"{d}_spread"] == pl.Int64
    assert df.schema["raw_answers"] == pl.List(pl.Utf8)
    assert set(df["judge_model"]) == {"claude-test"}
    path = tmp_path / "judge.parquet"
    write_table(df, path, {"rule": "judge"})
    back = read_table(path)
    assert list(back["status"]) == list(df["status"])
    assert_frame_equal(back, df)

    calls = len(fake.calls())
    again = judge_rollouts(_rollouts(PADS), backend(), RUBRIC, samples=3, params=PARAMS,
                           prefill=None, meta=META)
    assert len(fake.calls()) == calls  # warm cache: no HTTP call at all
    assert_frame_equal(df, again)


def test_local_judge_on_a_tiny_model_stores_raw_answers(tiny_model_dir, tmp_path):
    inner = HFBackend.from_pretrained(tiny_model_dir, batch_size=4, max_model_len=2048)
    backend = CachedBackend(inner, tmp_path / "cache", model_id="tiny@test")
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=6)
    df = judge_rollouts(_rollouts(PADS), backend, RUBRIC, samples=2, params=params,
                        prefill="<direction_a_score>", meta={"judge_model": "tiny"})
    assert backend.calls == 6
    scored = df.filter(pl.col("status") != "no_scratchpad")
    assert len(scored) == 3
    assert all(len(r) == 2 and all(t.startswith("<direction_a_score>") for t in r)
               for r in scored["raw_answers"])
    assert set(scored["status"]) <= {"ok", "partial", "unparsed"}
    write_table(df, tmp_path / "t.parquet", {"rule": "judge"})
    again = judge_rollouts(_rollouts(PADS), backend, RUBRIC, samples=2, params=params,
                           prefill="<direction_a_score>", meta={"judge_model": "tiny"})
    assert backend.calls == 6  # warm: nothing generated again
    assert_frame_equal(df, again)


# ----------------------------------------------------------------------------- expected scores


def _hand_level_logprobs(model, tok, messages, candidates):
    """log P(candidate | messages, the last assistant message continued) by one forward pass
    per candidate over the chat template's tokens; the score tag ends in '>' and a level
    starts with a digit, so the candidate's tokens follow the context's (asserted)."""
    import torch

    def ids(extra):
        text = tok.apply_chat_template([*messages[:-1], {**messages[-1], "content":
                                        messages[-1]["content"] + extra}],
                                       tokenize=False, continue_final_message=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    ctx = ids("")
    out = []
    for c in candidates:
        f = ids(c)
        assert f[:len(ctx)] == ctx
        keep = len(f) - len(ctx) + 1   # rows of positions len(ctx)-1 .. len(f)-1
        with torch.inference_mode():
            logits = model(torch.tensor([f]), logits_to_keep=keep).logits[0]
        lp = torch.log_softmax(logits.double(), -1)
        out.append(float(sum(lp[n - len(ctx), f[n]] for n in range(len(ctx), len(f)))))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("scale", [(0, 4), (7, 12)], ids=["shipped", "multi-token-levels"])
def test_expected_judge_scores_equal_a_hand_computation(tiny_model, tmp_path, scale):
    """Per direction: the expectation of the level, the argmax and the mass, from each
    level's full token sequence (with the closing tag) under a direct forward pass; levels
    10-12 take two digit tokens each in this tokenizer."""
    import numpy as np

    model, tok = tiny_model
    rubric = RUBRIC
    if scale != (0, 4):
        text = (REPO / "resources/judge/rubric.yaml").read_text().replace(
            "scale: {min: 0, max: 4}", f"scale: {{min: {scale[0]}, max: {scale[1]}}}")
        (tmp_path / "r.yaml").write_text(text)
        rubric = Rubric.load(tmp_path / "r.yaml")
        assert len(tok("12", add_special_tokens=False)["input_ids"]) > 1
    backend = HFBackend(model=model, tokenizer=tok, batch_size=4, show_progress=False)
    df = judge_rollouts_expected(_rollouts(PADS), backend, rubric,
                                 meta={"judge_model": "tiny", "judge_scoring": "expected"})
    levels = np.arange(scale[0], scale[1] + 1)
    assert df["status"].to_list() == ["ok"] * 3 + ["no_scratchpad"] * 2
    for row, pad in zip(df.head(3).iter_rows(named=True), PADS, strict=False):
        for d in ("a", "b"):
            msgs = rubric.messages(pad, f"<direction_{d}_score>")
            lp = np.array(_hand_level_logprobs(model, tok, msgs,
                                               [f"{v}</direction_{d}_score>" for v in levels]))
            p = np.exp(lp)
            assert row[f"{d}_mass"] == pytest.approx(p.sum(), rel=1e-4)
            assert row[f"{d}_score"] == pytest.approx((p * levels).sum() / p.sum(), rel=1e-4)
            assert row[f"{d}_argmax"] == levels[np.argmax(lp)]
            assert row[f"{d}_votes"] == [] and row[f"{d}_quote"] is None
    assert df.tail(2)["a_score"].null_count() == 2
    assert set(df["judge_scoring"]) == {"expected"}


def test_expected_judge_too_long_and_hosted_backends(tiny_model):
    model, tok = tiny_model
    backend = HFBackend(model=model, tokenizer=tok, max_model_len=64, show_progress=False)
    df = judge_rollouts_expected(_rollouts(PADS[:1]), backend, RUBRIC, meta={})
    assert df["status"].to_list() == ["too_long"] and df["a_score"].to_list() == [None]
    with pytest.raises(ValueError, match="log-probabilities"):
        judge_rollouts_expected(_rollouts(PADS), object(), RUBRIC, meta={})


def test_expected_score_arithmetic():
    import numpy as np

    score, top, mass = expected_score(np.log([0.1, 0.2, 0.1]), [0, 1, 2])
    assert (score, top, mass) == (pytest.approx(1.0), 1, pytest.approx(0.4))
