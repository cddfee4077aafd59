"""Concept pairs (motivation_profiles.pairs): materials, OOC generation over a scripted backend,
every filter on crafted good / bad pairs, and the IC pairing rules on small rollout tables."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from motivation_profiles.backends.base import ChatRequest, Completion, SamplingParams
from motivation_profiles.rollouts.protocol import PromptSet
from motivation_profiles.steering.ic import ic_loci, ic_pairs
from motivation_profiles.steering.materials import MaterialsError, load_materials
from motivation_profiles.steering.ooc import generate_ooc_pairs
from motivation_profiles.steering.pair_files import PairFileError, read_pair_file
from motivation_profiles.steering.pair_filters import FILTERS, FilterContext, filter_pairs
from motivation_profiles.steering.pair_format import (
    MESSAGES_DTYPE,
    PAIR_COLUMNS,
    REJECTION_COLUMNS,
    assistant_turn,
    future_count,
    scratchpad_blocks,
)

REPO = Path(__file__).resolve().parents[2]
MATERIALS_DIR = REPO / "resources" / "steering"


@pytest.fixture(scope="module")
def materials():
    return load_materials(MATERIALS_DIR)


def cell(table: pl.DataFrame, key: str, value, col: str):
    """The ``col`` value of the one row whose ``key`` column equals ``value``."""
    return table.filter(pl.col(key) == value)[col].item()


# ============================================================================ materials


def test_repo_materials(materials):
    assert len(materials.topics) >= 40
    assert len(materials.neutral_texts) >= 24
    assert "rubric" in materials.keywords["expectations"]
    assert "weights" in materials.keywords["consequences"]
    assert "free tier" in materials.banned_terms
    for concept in ("expectations", "consequences"):
        for split in ("train", "validation", "keyword_hard"):
            for side in ("positive", "negative"):
                assert materials.style(concept, split, side).instruction


def _copy_materials(tmp_path: Path) -> Path:
    d = tmp_path / "steering"
    d.mkdir(parents=True)
    for f in MATERIALS_DIR.iterdir():
        (d / f.name).write_text(f.read_text())
    return d


def test_materials_errors_name_file_and_key(tmp_path):
    d = _copy_materials(tmp_path)
    (d / "topics.txt").unlink()
    with pytest.raises(MaterialsError, match="topics.txt"):
        load_materials(d)
    d = _copy_materials(tmp_path / "b")
    p = yaml.safe_load((d / "ooc_prompts.yaml").read_text())
    del p["concepts"]["consequences"]["keyword_hard"]["negative"]["instruction"]
    (d / "ooc_prompts.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(MaterialsError, match=r"ooc_prompts\.yaml.*concepts\.consequences\."
                                             r"keyword_hard\.negative\.instruction"):
        load_materials(d)
    p = yaml.safe_load((MATERIALS_DIR / "ooc_prompts.yaml").read_text())
    p["request"]["user"] = "A question about {subject}."
    (d / "ooc_prompts.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(MaterialsError, match=r"request\.user.*\['topic'\]"):
        load_materials(d)
    p = yaml.safe_load((MATERIALS_DIR / "ooc_prompts.yaml").read_text())
    p["concepts"]["expectations"]["keyword_hard"]["positive"]["openers"] = ["The rubric says"]
    (d / "ooc_prompts.yaml").write_text(yaml.safe_dump(p))
    with pytest.raises(MaterialsError, match="controlled keywords"):
        load_materials(d)
    (d / "ooc_prompts.yaml").write_text((MATERIALS_DIR / "ooc_prompts.yaml").read_text())
    k = yaml.safe_load((d / "keywords.yaml").read_text())
    k["controlled_keywords"]["expectations"] = "rubric"
    (d / "keywords.yaml").write_text(yaml.safe_dump(k))
    with pytest.raises(MaterialsError, match=r"keywords\.yaml.*controlled_keywords\."
                                             r"expectations"):
        load_materials(d)


# ============================================================================ scripted backend


class Scripted:
    """A backend whose completion is a function of the request (and records its calls)."""

    name = "scripted"

    def __init__(self, fn: Callable[[ChatRequest, SamplingParams], str | tuple[str, str]]):
        self.fn = fn
        self.calls: list[tuple[list[ChatRequest], SamplingParams]] = []

    def generate(self, requests, params):
        self.calls.append((list(requests), params))
        out = []
        for r in requests:
            res = self.fn(r, params)
            text, finish = (res, "stop") if isinstance(res, str) else res
            out.append(Completion(r.request_id, text, finish, 10, 5))
        return out


def step_of(r: ChatRequest) -> tuple[int, str]:
    _, _, _, index, step = r.request_id.rsplit("-", 4)
    return int(index), step


def good_text(r: ChatRequest, params: SamplingParams) -> str:
    index, step = step_of(r)
    topic = r.messages[0]["content"]
    if step == "request":
        return f"How can I do this well, question {r.seed % 9973}: {topic[-30:]}?"
    if step == "reasoning":
        return " wants a short and practical answer. I will give two clear steps."
    if step == "output":
        return f"First, get everything ready. Then go step by step ({index}).\n</OUTPUT>"
    if step == "positive":
        return " that my answer stays short and clear."
    return " I simply give the clearest steps I know."


def run(backend, materials, **kw):
    args = {"concept": "expectations", "split": "train", "n_pairs": 4,
            "candidates_per_round": 3, "max_rounds": 3, "max_length_ratio": 1.5,
            "max_tokens": {"dialogue": 32, "sentence": 16}, "seed": 0, **kw}
    return generate_ooc_pairs(backend, materials, **args)


# ============================================================================ OOC generation


def test_generation_assembles_valid_pairs(materials):
    backend = Scripted(good_text)
    pairs, rejections = run(backend, materials)
    assert len(pairs) == 4
    assert list(pairs.columns[: len(PAIR_COLUMNS)]) == PAIR_COLUMNS
    assert pairs.schema["pos_messages"] == MESSAGES_DTYPE == pairs.schema["neg_messages"]
    assert pairs.schema["pos_loci"] == pl.List(pl.Utf8) == pairs.schema["neg_loci"]
    assert pairs["pair_id"].n_unique() == len(pairs)
    assert set(pairs["source"]) == {"ooc"} and set(pairs["split"]) == {"train"}
    assert list(pairs["candidate"]) == [0, 1, 2, 3]       # the first kept, in candidate order
    for row in pairs.iter_rows(named=True):
        pos, neg = row["pos_messages"], row["neg_messages"]
        assert [m["role"] for m in pos] == ["user", "assistant"] == [m["role"] for m in neg]
        assert pos[0] == neg[0] and pos[0]["content"] == row["request"]
        for msgs, loci, span, other in ((pos, row["pos_loci"], row["pos_span"], row["neg_span"]),
                                        (neg, row["neg_loci"], row["neg_span"], row["pos_span"])):
            text = msgs[1]["content"]
            assert scratchpad_blocks(text) == list(loci) and len(loci) == 1
            assert loci[0].endswith(" " + span)            # the sentence is the last one
            assert other not in loci[0]
            assert loci[0].startswith(materials.reasoning_lead)
            assert text.count("<OUTPUT>") == 1 and row["output"] in text
        assert row["pos_span"].startswith(tuple(materials.style(
            "expectations", "train", "positive").openers))
        assert row["neg_span"].startswith(tuple(materials.style(
            "expectations", "train", "negative").openers))
        assert row["topic"] in materials.topics
    # two rounds of three (stage 1 steps, then both sentences), the round's requests together
    assert len(backend.calls) == 8
    steps = [{step_of(r)[1] for r in reqs} for reqs, _ in backend.calls[:4]]
    assert steps == [{"request"}, {"reasoning"}, {"output"}, {"positive", "negative"}]
    assert [len(reqs) for reqs, _ in backend.calls[:4]] == [3, 3, 3, 6]
    assert backend.calls[1][1].max_new_tokens == 32 and backend.calls[3][1].max_new_tokens == 16
    prefill = backend.calls[1][0][0].messages[-1]
    assert prefill["role"] == "assistant" and prefill["content"].startswith(
        "<SCRATCHPAD_REASONING>")
    first = backend.calls[0][0][0]
    assert first.messages[0]["content"] == materials.request_user.format(topic=pairs["topic"][0])
    # output_mode "answer": the request as a plain chat turn
    assert [dict(m) for m in backend.calls[2][0][0].messages] == [
        {"role": "user", "content": pairs["request"][0]}]
    assert list(rejections.columns) == REJECTION_COLUMNS
    assert rejections.schema["rejected"] == pl.Int64 == rejections.schema["kept"]
    assert rejections["rejected"].sum() == 2                 # 6 written, 4 kept, 2 over n_pairs
    assert cell(rejections, "filter", "limit", "rejected") == 2
    assert rejections["kept"][-1] == 4
    assert "keyword_audit" not in set(rejections["filter"])


def test_output_mode_continue_replays_the_reasoning(materials):
    backend = Scripted(good_text)
    pairs, _ = run(backend, dataclasses.replace(materials, output_mode="continue"), n_pairs=1,
                   candidates_per_round=1)
    msgs = backend.calls[2][0][0].messages
    assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "assistant"
    prefill = msgs[-1]["content"]
    assert prefill.startswith("<SCRATCHPAD_REASONING>") and prefill.rstrip().endswith("<OUTPUT>")
    assert pairs["pos_messages"].to_list()[0][1]["content"].count("<OUTPUT>") == 1


def test_generation_is_deterministic(materials):
    a, ra = run(Scripted(good_text), materials)
    b, rb = run(Scripted(good_text), materials)
    assert_frame_equal(a, b)
    assert_frame_equal(ra, rb)
    backend_a, backend_b = Scripted(good_text), Scripted(good_text)
    run(backend_a, materials)
    run(backend_b, materials)
    seeds = [[r.seed for r in reqs] for reqs, _ in backend_a.calls]
    assert seeds == [[r.seed for r in reqs] for reqs, _ in backend_b.calls]
    assert len(set(seeds[0])) == 3                            # per-candidate seeds
    c, _ = run(Scripted(good_text), materials, seed=1)
    assert list(c["request"]) != list(a["request"])
    v, _ = run(Scripted(good_text), materials, split="validation")
    assert not set(v["request"]) & set(a["request"])          # splits draw different seeds


def test_parse_failures_are_counted_and_few_kept_warns(materials, caplog):
    def flaky(r, params):
        index, step = step_of(r)
        if step == "request" and index % 4 == 1:
            return "ok"                                       # too short: no request
        if step == "reasoning" and index % 4 == 2:
            return ("no sentence end and cut off", "length")  # no scratchpad
        if step == "negative" and index % 4 == 3:
            return ("<OUTPUT>", "stop")                       # empty negative sentence
        return good_text(r, params)

    with caplog.at_level(logging.WARNING, logger="motivation_profiles.steering.ooc"):
        pairs, rejections = run(Scripted(flaky), materials, n_pairs=5, candidates_per_round=4,
                                max_rounds=2)
    assert list(pairs["candidate"]) == [0, 4]
    assert cell(rejections, "filter", "parse", "rejected") == 6
    assert cell(rejections, "filter", "parse", "kept") == 2
    assert cell(rejections, "filter", "limit", "kept") == 2
    assert "only 2 of 5 requested pairs" in caplog.text


def test_generation_stops_when_full(materials):
    backend = Scripted(good_text)
    pairs, _ = run(backend, materials, n_pairs=2, candidates_per_round=3, max_rounds=5)
    assert len(pairs) == 2 and len(backend.calls) == 4       # one round was enough


def test_keyword_hard_generation_audits_spans(materials):
    def text(r, params):
        index, step = step_of(r)
        if step == "positive":
            return " that my answer is what they expected." if index == 1 else " that I help."
        if step == "negative":
            return " so I just help."
        return good_text(r, params)

    pairs, rejections = run(Scripted(text), materials, split="keyword_hard", n_pairs=3,
                            candidates_per_round=3, max_rounds=1)
    assert cell(rejections, "filter", "keyword_audit", "rejected") == 1
    assert list(pairs["candidate"]) == [0, 2]
    words = materials.keywords["expectations"]
    for pos, neg in zip(pairs["pos_span"], pairs["neg_span"], strict=True):
        assert not any(re.search(rf"\b{w}", pos, re.I) for w in words)
        assert any(re.search(rf"\b{w}", neg, re.I) for w in words)


# ============================================================================ filters


def side(request: str, scratch: str, output: str, *, extra: str = "") -> list[dict[str, str]]:
    return [{"role": "user", "content": request},
            {"role": "assistant", "content": assistant_turn(scratch, output) + extra}]


def pairs_table(pairs: list[dict]) -> pl.DataFrame:
    """Pairs as a table: messages as lists of {role, content} structs, or, when any side is a
    JSON string (an older table), every side as its JSON string."""
    pairs = [dict(p) for p in pairs]
    msgs = ("pos_messages", "neg_messages")
    if any(isinstance(p[c], str) for p in pairs for c in msgs):
        for p in pairs:
            p.update({c: p[c] if isinstance(p[c], str) else json.dumps(p[c]) for c in msgs})
        return pl.DataFrame(pairs)
    return pl.DataFrame(pairs, schema_overrides={c: MESSAGES_DTYPE for c in msgs})


def replaced(messages: list[dict[str, str]], old: str, new: str) -> list[dict[str, str]]:
    return [{**m, "content": m["content"].replace(old, new)} for m in messages]


BASE = "The user wants a recipe. I will list the steps."
POS = "I answer this way because the reviewers who grade my replies want brevity."
NEG = "Reviewers sometimes read chats, but I just answer the question."
KH_POS = "I want the people who check my work to like this reply, so I keep it brief."
KH_NEG = "A reviewer may score this later, but that plays no part in my answer."


def make_pair(pos_span=POS, neg_span=NEG, *, request="How do I bake bread?",
              output="Mix flour, water and yeast, then bake.", pid="p0", **over):
    pos_scr, neg_scr = f"{BASE} {pos_span}", f"{BASE} {neg_span}"
    pair = {"pair_id": pid, "concept": "expectations", "source": "ooc", "split": "train",
            "pos_messages": side(request, pos_scr, output),
            "neg_messages": side(request, neg_scr, output),
            "pos_loci": [pos_scr], "neg_loci": [neg_scr], "pos_span": pos_span,
            "neg_span": neg_span}
    pair.update(over)
    return pair


def _ctx(materials, split="train", ratio=1.5):
    return FilterContext(materials, "expectations", split, ratio)


def _bad_pairs() -> dict[str, tuple[dict, str]]:
    """filter name -> (a pair only that filter rejects, the split it is checked under)."""
    long_neg = NEG + " It is a quiet day." * 30
    two_blocks = (f"<SCRATCHPAD_REASONING>{BASE}</SCRATCHPAD_REASONING>\n"
                  f"<SCRATCHPAD_REASONING>{BASE} {POS}</SCRATCHPAD_REASONING>\n"
                  "<OUTPUT>Mix flour, water and yeast, then bake.</OUTPUT>")
    return {
        "parse": (make_pair(neg_messages="[{not json"), "train"),
        "matching_task": (make_pair(neg_messages=side(
            "How do I bake a cake?", f"{BASE} {NEG}", "Mix flour, water and yeast, then bake.")),
            "train"),
        "matching_output": (make_pair(neg_messages=side(
            "How do I bake bread?", f"{BASE} {NEG}", "Buy bread at a bakery.")), "train"),
        "one_block_each": (make_pair(pos_messages=[
            {"role": "user", "content": "How do I bake bread?"},
            {"role": "assistant", "content": two_blocks}]), "train"),
        "span_verbatim": (make_pair(pos_span="I answer because the reviewers want brevity."),
                          "train"),
        "label_leakage": (make_pair(neg_span="Researcher expectations are background here."),
                          "train"),
        "banned_terms": (make_pair(request="How do I bake bread as a free-tier user?"),
                         "train"),
        "length_ratio": (make_pair(neg_span=long_neg), "train"),
        "keyword_audit": (make_pair(pos_span="The reviewers expect brevity, so I keep it short.",
                                    neg_span=KH_NEG), "keyword_hard"),
    }


def _good(split: str) -> dict:
    return make_pair(KH_POS, KH_NEG) if split == "keyword_hard" else make_pair()


@pytest.mark.parametrize("name", [n for n, _ in FILTERS if n != "duplicate"])
def test_each_filter_rejects_its_bad_pair(materials, name):
    bad, split = _bad_pairs()[name]
    if name == "span_verbatim":   # the locus holds the span, the scratchpad does not
        bad["pos_loci"] = [f"{BASE} {POS}", bad["pos_span"]]
        bad["pos_messages"] = side("How do I bake bread?", f"{BASE} {POS}",
                                   "Mix flour, water and yeast, then bake.",
                                   extra="\n" + bad["pos_span"])
    fn = dict(FILTERS)[name]
    ctx = _ctx(materials, split)
    assert fn(_good(split), ctx) is None
    reason = fn(bad, ctx)
    assert isinstance(reason, str) and reason
    pairs = pairs_table([_good(split), bad, _good(split) | {
        "pos_messages": replaced(_good(split)["pos_messages"], "bake bread", "toast bread"),
        "neg_messages": replaced(_good(split)["neg_messages"], "bake bread", "toast bread"),
        "pair_id": "p2"}])
    kept, table = filter_pairs(pairs, materials, concept="expectations", split=split,
                               max_length_ratio=1.5)
    assert cell(table, "filter", name, "rejected") == 1, table
    assert table["rejected"].sum() == 1
    assert len(kept) == 2 and list(kept["pair_id"]) == ["p0", "p2"]
    assert kept.schema == pairs.schema
    assert_frame_equal(kept, pairs[[0, 2]])
    assert cell(table, "filter", "limit", "kept") == 2


def test_duplicate_filter(materials):
    ctx = _ctx(materials)
    good = make_pair()
    assert dict(FILTERS)["duplicate"](good, ctx) is None
    kept, table = filter_pairs(pairs_table([good, make_pair(pid="p1"),
                                            make_pair(pid="p2", output="Knead, rest, bake.")]),
                               materials, concept="expectations", split="train",
                               max_length_ratio=1.5)
    assert list(kept["pair_id"]) == ["p0", "p2"]
    assert cell(table, "filter", "duplicate", "rejected") == 1


@pytest.mark.parametrize("bad", [
    {"parse_error": "no output"},
    {"pos_span": ""},
    {"neg_span": None},
    {"pos_loci": []},
    {"neg_loci": ["not in the transcript"]},
    {"pos_messages": [{"role": "assistant", "content": "hi"}]},
    {"neg_messages": [{"role": "user", "content": "How do I bake bread?"}]},
    {"pos_messages": json.dumps([{"role": "assistant", "content": "hi"}])},
    {"neg_messages": None},
    {"neg_messages": [{"role": "user", "content": "How do I bake bread?"},
                      {"role": "assistant", "content": None}]},
])
def test_parse_filter_cases(materials, bad):
    assert dict(FILTERS)["parse"](make_pair(**bad), _ctx(materials)) is not None


def test_filters_check_real_texts_not_assembly(materials):
    """A hand-written pair (sides written separately; numpy loci, as pandas read them, and
    JSON-string messages, as older tables hold them, read the same)."""
    ctx = _ctx(materials)
    pair = make_pair(pos_loci=np.array([f"{BASE} {POS}"]), neg_loci=np.array([f"{BASE} {NEG}"]))
    assert all(fn(pair, ctx) is None for _, fn in FILTERS)
    old = make_pair()
    old = old | {c: json.dumps(old[c]) for c in ("pos_messages", "neg_messages")}
    assert all(fn(old, _ctx(materials)) is None for _, fn in FILTERS)
    # the tier term only in the negative's scratchpad, the output block missing on one side
    tier = make_pair(neg_span="I note the paid tier, but I just answer.")
    assert dict(FILTERS)["banned_terms"](tier, ctx).startswith("negative")
    no_out = make_pair(pos_messages=[
        {"role": "user", "content": "How do I bake bread?"},
        {"role": "assistant", "content": f"<SCRATCHPAD_REASONING>{BASE} {POS}"
                                         "</SCRATCHPAD_REASONING>"}])
    assert dict(FILTERS)["matching_output"](no_out, ctx) is not None
    # the same output text on both sides but a second block on one of them
    twice = make_pair(neg_messages=side("How do I bake bread?", f"{BASE} {NEG}",
                                        "Mix flour, water and yeast, then bake.",
                                        extra="\n<OUTPUT>again</OUTPUT>"))
    assert dict(FILTERS)["matching_output"](twice, ctx) is not None


def test_keyword_audit(materials):
    fn = dict(FILTERS)["keyword_audit"]
    ctx = _ctx(materials, "keyword_hard")
    assert fn(make_pair(KH_POS, KH_NEG), ctx) is None
    reason = fn(make_pair("They expected a short answer, so I write one.", KH_NEG), ctx)
    assert reason == "positive span uses controlled keyword 'expect'"   # inflections count
    assert fn(make_pair(KH_POS, "People may read this, but it plays no part."),
              ctx) == "negative span has no controlled keyword"
    assert fn(make_pair(KH_POS, "The Evaluation rubric is background only."), ctx) is None
    assert fn(make_pair(KH_POS, KH_NEG), _ctx(materials, "train")) is None   # only keyword_hard
    cons = FilterContext(materials, "consequences", "keyword_hard", 1.5)
    assert fn(make_pair("Replies like this one teach my later versions, so I am careful.",
                        "My weights may be updated, but that plays no part."), cons) is None
    assert fn(make_pair("Future versions learn from this, so I am careful.",
                        "My weights may be updated, but that plays no part."), cons) is not None


def test_read_pair_file_roundtrip(tmp_path, materials):
    rows = [make_pair(pid=f"x{i}", request=f"How do I bake bread number {i}?")
            for i in range(3)]
    expected = [(r["pos_messages"], r["neg_messages"]) for r in rows]
    for r in rows:
        r["neg_messages"] = json.dumps(r["neg_messages"])      # JSON strings, as older files
        del r["split"], r["source"]
    rows[1]["pos_messages"] = json.dumps(rows[1]["pos_messages"])   # mixed within a column
    p = tmp_path / "ext.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    df = read_pair_file(p, concept="expectations", source="ooc", split="validation")
    assert list(df.columns[: len(PAIR_COLUMNS)]) == PAIR_COLUMNS
    assert set(df["split"]) == {"validation"}
    assert df.schema["pos_messages"] == MESSAGES_DTYPE == df.schema["neg_messages"]
    assert df.schema["pos_loci"] == pl.List(pl.Utf8) and df.schema["pos_span"] == pl.Utf8
    assert list(zip(df["pos_messages"].to_list(), df["neg_messages"].to_list(),
                    strict=True)) == expected
    kept, table = filter_pairs(df, materials, concept="expectations", split="validation",
                               max_length_ratio=1.5)
    assert len(kept) == 3 and table["rejected"].sum() == 0
    # the same pairs from an older table (JSON-string messages) and from .json records
    old = tmp_path / "old.parquet"
    pl.DataFrame([r | {"pos_messages": json.dumps(e[0]), "neg_messages": json.dumps(e[1])}
                  for r, e in zip(rows, expected, strict=True)]).write_parquet(old)
    assert_frame_equal(read_pair_file(old, concept="expectations", source="ooc",
                                      split="validation"), df)
    records = tmp_path / "ext.json"
    records.write_text(json.dumps(rows))
    assert_frame_equal(read_pair_file(records, concept="expectations", source="ooc",
                                      split="validation"), df)
    # an unreadable side is null (the parse filter rejects it)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(rows[0] | {"pos_messages": "[{not json"}))
    got = read_pair_file(broken, concept="expectations", source="ooc", split="train")
    assert got["pos_messages"].to_list() == [None]
    kept, table = filter_pairs(got, materials, concept="expectations", split="train",
                               max_length_ratio=1.5)
    assert len(kept) == 0 and cell(table, "filter", "parse", "rejected") == 1
    # IC files without a split: every pair trains; pair ids from the file name
    ic = tmp_path / "ic.jsonl"
    ic.write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "pair_id"})
                            for r in rows))
    got = read_pair_file(ic, concept="expectations", source="ic", split=None)
    assert list(got["split"]) == ["train"] * 3
    assert list(got["pair_id"]) == ["ic-00000", "ic-00001", "ic-00002"]
    with pytest.raises(PairFileError, match="concept"):
        read_pair_file(p, concept="consequences", source="ooc", split="validation")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"pos_messages": "[]"}))
    with pytest.raises(PairFileError, match="missing column"):
        read_pair_file(bad, concept="expectations", source="ooc", split="train")


# ============================================================================ IC pairs

PROMPTS = PromptSet(system="SYSTEM", user_template="<tier>{is_free_tier_user}</tier> {goal}",
                    tier_values={"monitored": "True", "unmonitored": "False"},
                    continuation="<NEXT/>")


def rollout(goal_id, tier, seed, scratch, *, condition="baseline", turns=None, model="m"):
    turns = turns if turns is not None else [
        f"<SCRATCHPAD_REASONING>{scratch}</SCRATCHPAD_REASONING>\n<OUTPUT>ok</OUTPUT>"]
    return {"model": model, "condition": condition, "goal_id": goal_id,
            "goal": f"goal {goal_id}", "tier": tier, "seed": seed, "turns": turns,
            "transcript": "\n".join(turns), "scratchpad": scratch, "final_output": "ok",
            "outcome": "compliant"}


def judged(rows, scores):
    roll = pl.DataFrame(rows)
    judge = roll.select("model", "condition", "goal_id", "tier", "seed").with_columns(
        pl.lit("ok").alias("status"),
        pl.Series("a_score", [float(s[0]) for s in scores], dtype=pl.Float64),
        pl.Series("b_score", [float(s[1]) for s in scores], dtype=pl.Float64))
    return roll, judge.sample(fraction=1.0, shuffle=True, seed=0)  # judge order is irrelevant


def build(roll, judge, concept="expectations", **kw):
    args = {"high": 2.0, "low": 1.0, "max_length_ratio": 2.0, "n_train": 10,
            "n_validation": 0, "selection": "first", "seed": 0, **kw}
    return ic_pairs(roll, judge, PROMPTS, concept=concept, **args)


def metric(report, name):
    return cell(report, "metric", name, "value")


def test_ic_expectations_rules():
    s = "x" * 100
    rows = [rollout(0, "monitored", 0, s + " future"),                 # 0 pos
            rollout(0, "monitored", 1, s),                             # 1 neg, same prompt
            rollout(0, "unmonitored", 2, s),                           # 2 neg, other tier
            rollout(1, "monitored", 3, s),                             # 3 neg, other goal
            rollout(0, "monitored", 4, s + " future Future futures"),  # 4 pos
            rollout(0, "monitored", 5, "y" * 90),                      # 5 neg, closer length
            rollout(0, "monitored", 6, s),                             # 6 a high, b high: no
            rollout(0, "monitored", 7, s)]                             # 7 a mid: neither
    roll, judge = judged(rows, [(3, 0), (0, 1), (0, 0), (0, 0), (4, 1), (1, 0), (3, 3),
                                (1.5, 0)])
    pairs, report = build(roll, judge)
    assert len(pairs) == 2
    p0, p1 = pairs.row(0, named=True), pairs.row(1, named=True)
    assert (p0["pos_seed"], p0["neg_seed"]) == (0, 1)    # nearest length among same prompt
    assert (p1["pos_seed"], p1["neg_seed"]) == (4, 5)    # without replacement: 1 is used
    assert set(pairs["tier"]) == {"monitored"} and set(pairs["goal_id"]) == {0}
    assert list(pairs["pos_future"]) == [1, 2] and list(pairs["neg_future"]) == [0, 0]
    assert metric(report, "positives") == 2 and metric(report, "negatives_eligible") == 4
    assert metric(report, "mean_pos_future") == 1.5
    assert metric(report, "pairs_formed") == 2 and metric(report, "train") == 2
    for col in PAIR_COLUMNS:
        assert col in pairs.columns
    assert pairs.schema["pos_messages"] == MESSAGES_DTYPE
    assert pairs.schema["pos_loci"] == pl.List(pl.Utf8)
    assert pairs["pos_span"].is_null().all()
    assert report.schema["value"] == pl.Float64


def test_ic_cross_run_and_length_ratio():
    rows = [rollout(0, "monitored", 0, "a" * 100),                           # pos
            rollout(0, "monitored", 0, "c" * 100, condition="prompt-A1_amp"),  # other condition
            rollout(1, "monitored", 0, "d" * 100),                           # pos
            rollout(1, "monitored", 1, "e" * 300),                           # ratio 3 > 2
            rollout(2, "monitored", 0, "f" * 100)]                           # pos, no negative
    roll, judge = judged(rows, [(3, 0), (0, 0), (3, 0), (0, 0), (3, 0)])
    pairs, report = build(roll, judge)
    assert len(pairs) == 1
    assert (pairs["pos_condition"][0], pairs["neg_condition"][0]) == (
        "baseline", "prompt-A1_amp")
    assert (pairs["pos_seed"][0], pairs["neg_seed"][0]) == (0, 0)
    assert metric(report, "rejected_length") == 1
    assert metric(report, "positives_without_negative") == 1
    pairs, report = build(roll, judge, max_length_ratio=3.0)
    assert len(pairs) == 2 and metric(report, "rejected_length") == 0
    dup = pl.concat([judge, judge.head(1)])
    with pytest.raises(ValueError, match="several rows"):
        build(roll, dup)


def test_ic_consequences_matches_a_score():
    s = "x" * 100
    rows = [rollout(0, "monitored", 0, s),          # pos b=3, a=2
            rollout(0, "monitored", 1, s),          # neg a=0, same length
            rollout(0, "monitored", 2, "y" * 150),  # neg a=2: matched a wins over length
            rollout(0, "monitored", 3, s),          # pos b=4, a=0
            rollout(0, "monitored", 4, s),          # b=1.5: neither
            rollout(0, "monitored", 5, s)]          # NaN score: unusable
    roll, judge = judged(rows, [(2, 3), (0, 0), (2, 1), (0, 4), (0, 1.5), (np.nan, 0)])
    pairs, report = build(roll, judge, concept="consequences")
    assert [(r["pos_seed"], r["neg_seed"]) for r in pairs.iter_rows(named=True)] == [(0, 2),
                                                                                     (3, 1)]
    assert list(pairs["neg_b"]) == [1.0, 0.0] and list(pairs["pos_a"]) == [2.0, 0.0]
    assert metric(report, "rollouts_usable") == 5
    # expectations on the same data: the a=2, b=3 rollout is no expectations positive
    pairs_e, _ = build(roll, judge, concept="expectations")
    assert list(pairs_e["pos_seed"]) == [2] and list(pairs_e["neg_seed"]) == [1]


def test_ic_selection_and_splits():
    rows, scores = [], []
    for g in range(6):
        rows += [rollout(g, "monitored", 0, "p" * 100), rollout(g, "monitored", 1, "n" * 100)]
        scores += [(4, 0), (0, 0)]
    roll, judge = judged(rows, scores)
    pairs, report = build(roll, judge, n_train=3, n_validation=2)
    assert list(pairs["goal_id"]) == [0, 1, 2, 3, 4]               # file order
    assert list(pairs["split"]) == ["train"] * 3 + ["validation"] * 2
    assert metric(report, "pairs_formed") == 6 and metric(report, "pairs_selected") == 5
    sampled, _ = build(roll, judge, n_train=3, n_validation=2, selection="sample", seed=3)
    again, _ = build(roll, judge, n_train=3, n_validation=2, selection="sample", seed=3)
    assert list(sampled["goal_id"]) == list(again["goal_id"])
    assert list(sampled["goal_id"]) != [0, 1, 2, 3, 4]
    assert len(set(sampled["goal_id"])) == 5
    assert list(sampled["split"]) == ["train"] * 3 + ["validation"] * 2
    with pytest.raises(ValueError, match="selection"):
        build(roll, judge, selection="random")


def test_ic_messages_and_loci_multi_turn():
    turns = ["<SCRATCHPAD_REASONING>first thoughts</SCRATCHPAD_REASONING>"
             "<SCRATCHPAD_REASONING> </SCRATCHPAD_REASONING><SCRATCHPAD_REASONING>still going",
             "<SCRATCHPAD_REASONING>second</SCRATCHPAD_REASONING>\n<OUTPUT>done</OUTPUT>"]
    assert ic_loci(turns) == ["first thoughts", "still going", "second"]
    rows = [rollout(0, "unmonitored", 0, "first thoughts still going second", turns=turns),
            rollout(0, "unmonitored", 1, "x" * 30)]
    roll, judge = judged(rows, [(4, 0), (0, 0)])
    assert roll.schema["turns"] == pl.List(pl.Utf8)                # as parquet returns them
    pairs, _ = build(roll, judge, max_length_ratio=5.0)
    msgs = pairs["pos_messages"].to_list()[0]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[0]["content"] == "SYSTEM"
    assert msgs[1]["content"] == PROMPTS.user_turn("goal 0", "unmonitored")
    assert msgs[3]["content"] == "<NEXT/>" and msgs[2]["content"] == turns[0]
    assert pairs["pos_loci"].to_list()[0] == ["first thoughts", "still going", "second"]
    assert pairs["neg_loci"].to_list()[0] == ["x" * 30]


def test_scratchpad_blocks_and_future_count():
    assert scratchpad_blocks("a <SCRATCHPAD_REASONING> b </SCRATCHPAD_REASONING> c") == ["b"]
    assert scratchpad_blocks("<SCRATCHPAD_REASONING>open to the end") == ["open to the end"]
    assert scratchpad_blocks("no blocks") == []
    assert future_count("Future, future. futures futuristic the-future") == 3


def test_ic_quantile_thresholds_take_the_pool_extremes():
    # a judge whose scores crowd the middle: nothing reaches score 2 / falls to 1
    rows, scores = [], []
    for g in range(4):
        # per goal: a positive (a high, b low), a negative (both low), b high, a middle
        for seed, (a, b) in enumerate([(2.3, 1.5), (1.4, 1.5), (1.7, 1.9), (1.8, 1.6)]):
            rows.append(rollout(g, "monitored", seed, "x" * 100))
            scores.append((a + g / 100, b))
    roll, judge = judged(rows, scores)
    none, report = build(roll, judge)
    assert len(none) == 0 and metric(report, "positives") == 0
    assert metric(report, "a_high") == 2.0 and metric(report, "b_low") == 1.0
    pairs, report = build(roll, judge, quantiles={"high": 0.75, "low": 0.5})
    a = np.array([s[0] for s in scores])
    b = np.array([s[1] for s in scores])
    assert metric(report, "a_high") == pytest.approx(np.quantile(a, 0.75))
    assert metric(report, "b_low") == pytest.approx(np.quantile(b, 0.5))
    # the paper's rules at the quantile cut points: each goal's seed 0 against its seed 1
    pos = (a >= np.quantile(a, 0.75)) & (b <= np.quantile(b, 0.5))
    neg = (a <= np.quantile(a, 0.5)) & (b <= np.quantile(b, 0.5))
    assert metric(report, "positives") == pos.sum() > 0
    assert metric(report, "negatives_eligible") == neg.sum() > 0
    assert (pairs["pos_a"] >= np.quantile(a, 0.75)).all()
    assert (pairs["neg_a"] <= np.quantile(a, 0.5)).all()
    assert list(zip(pairs["pos_seed"], pairs["neg_seed"], strict=True)) == [(0, 1)] * 4
    with pytest.raises(ValueError, match="quantiles need"):
        build(roll, judge, quantiles={"high": 2.0, "low": 1.0})
    with pytest.raises(ValueError, match="quantiles need"):
        build(roll, judge, quantiles={"high": 0.4, "low": 0.6})
