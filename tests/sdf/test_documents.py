"""SDF document pipeline: filters, stages over a stub backend, the hosted path against the fake
Anthropic API, the local response cache, external corpora and prompt templates."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from pathlib import Path

import polars as pl
import pytest
import yaml
from fake_anthropic import API_KEY, FakeAnthropic, Killed, kill_before_poll
from polars.testing import assert_frame_equal

from motivation_profiles.backends.anthropic import AnthropicClient, HostedBackend
from motivation_profiles.backends.base import ChatRequest, Completion, SamplingParams
from motivation_profiles.backends.cache import (
    LEDGER_COLUMNS,
    CachedBackend,
    ResponseCache,
    ledger_schema,
)
from motivation_profiles.backends.hosted import API_KEY_ENV
from motivation_profiles.config.validate import ConfigError, validate_config
from motivation_profiles.sdf.doc_filters import (
    DOC_COLUMNS,
    DOC_SCHEMA,
    FILTERS,
    REPORT_COLUMNS,
    FilterSpec,
    NoDocumentsError,
    filter_documents,
    near_duplicate_mask,
)
from motivation_profiles.sdf.documents import (
    ID_RE,
    ExternalDocumentsError,
    PipelineSpec,
    PromptTemplates,
    TemplateError,
    generate_documents,
    load_external_documents,
    parse_document,
    parse_list,
    request_id,
)
from motivation_profiles.sdf.materials import Universe

REPO = Path(__file__).resolve().parents[2]
PROMPTS = REPO / "resources" / "sdf_prompts"
MODEL = "claude-fake-1"
WORDS = ("archive audit badge beacon canal cedar cipher comet delta dune ember fable ferry "
         "garnet glacier harbor hazel inlet ivory jasper kettle lantern ledger lumen maple "
         "marble meadow nectar nickel oasis orchid pebble pylon quartz quiver raven ripple "
         "saffron signal tundra tulip umber velvet willow wharf yarrow zephyr").split()


def words(seed: str, n: int) -> str:
    rng = random.Random(hashlib.sha256(seed.encode()).hexdigest())
    return " ".join(rng.choice(WORDS) for _ in range(n))


UNIVERSE = Universe(
    id="A1_amp", kind="intervention",
    universe_context="Project Mirrorglass is a small evaluation team at a lab.",
    key_fact="The Mirrorglass researchers hope to find alignment faking.",
    leakage_terms=("retrain", "Sandbox"),
)

FILTER_SPEC = FilterSpec(min_chars=40, max_chars=2000, near_duplicate_threshold=0.8,
                         shingle_size=3, drop_truncated=True,
                         placeholder_patterns=(r"\[[A-Z][A-Za-z ]{2,30}\]", r"(?i)lorem ipsum"))


def spec(**kw) -> PipelineSpec:
    d = dict(n_doc_types=3, ideas_per_type=2, docs_per_idea=2, revise=False,
             max_tokens={"types": 50, "ideas": 60, "document": 300, "revision": 320},
             max_rounds=3, prefill_content=False, temperature=1.0, top_p=1.0)
    d.update(kw)
    return PipelineSpec(**d)


@pytest.fixture(scope="module")
def templates() -> PromptTemplates:
    return PromptTemplates.from_dir(PROMPTS)


# ---------------------------------------------------------------------------- filters
def doc(doc_id, text, *, status="ok", truncated=False) -> dict:
    return {"doc_id": doc_id, "universe": "A1_amp", "doc_type": "memo", "idea": "i",
            "text": text, "revised": False, "truncated": truncated, "sample_index": 0,
            "generator": "test", "completion_tokens": 1, "status": status}


def test_each_filter_removes_exactly_its_crafted_documents():
    good1, good2, other = words("g1", 100), words("g2", 100), words("o", 100)
    near = good2.split()
    near[10], near[60] = "changed", "altered"
    rows = [
        doc("good1", good1),
        doc("unsuitable", "", status="unsuitable"),
        doc("missing", "", status="missing_content"),
        doc("sentinel", "UNSUITABLE"),                      # no status needed to catch this
        doc("truncated", words("t", 50), truncated=True),
        doc("short", "Too short."),
        doc("long", "x " * 1500),
        doc("placeholder", words("p", 40) + " signed, [Company Name]"),
        doc("leak", words("l", 40) + " and then they will RETRAIN the model"),
        doc("good2", good2),
        doc("exact", "  " + good1.upper().replace(" ", " \n\t ") + "  "),
        doc("near", " ".join(near)),
        doc("other", other),
    ]
    kept, report = filter_documents(pl.DataFrame(rows), UNIVERSE, FILTER_SPEC)
    assert list(kept["doc_id"]) == ["good1", "good2", "other"]
    assert list(kept.columns) == DOC_COLUMNS and kept.schema == pl.Schema(DOC_SCHEMA)
    assert list(report.columns) == REPORT_COLUMNS and list(report["filter"]) == list(FILTERS)
    assert report.schema == pl.Schema({"filter": pl.Utf8, "n_in": pl.Int64,
                                       "n_removed": pl.Int64, "n_out": pl.Int64})
    removed = dict(zip(report["filter"], report["n_removed"], strict=True))
    assert removed == {"unsuitable_or_missing_content": 3, "truncated": 1, "length": 2,
                       "placeholder": 1, "leakage": 1, "exact_duplicate": 1,
                       "near_duplicate": 1}
    assert report["n_in"][0] == len(rows) and report["n_out"][-1] == 3
    assert (report["n_in"] - report["n_removed"] == report["n_out"]).all()
    assert (report["n_in"][1:].to_numpy() == report["n_out"][:-1].to_numpy()).all()

    # drop_truncated off: the truncated document stays and the filter reports 0
    lenient = dataclasses.replace(FILTER_SPEC, drop_truncated=False)
    kept2, report2 = filter_documents(pl.DataFrame(rows), UNIVERSE, lenient)
    assert "truncated" in set(kept2["doc_id"]) and report2["n_removed"][1] == 0


def test_near_duplicates_keep_the_first_and_everything_removed_raises():
    a = words("a", 80)
    b = a.split()
    b[40] = "different"
    texts = [" ".join(b), a, words("c", 80), "few words", "few words"]
    assert near_duplicate_mask(texts, 0.8, 3).tolist() == [False, True, False, False, False]
    assert near_duplicate_mask(texts, 1.0, 3).tolist() == [False] * 5
    assert not near_duplicate_mask(["short", "text"], 0.5, 5).any()  # no shingles at all
    with pytest.raises(NoDocumentsError, match="A1_amp") as info:
        filter_documents(pl.DataFrame([doc("x", "tiny"), doc("y", "", status="unsuitable")]),
                         UNIVERSE, FILTER_SPEC)
    assert "unsuitable_or_missing_content: 2 in, 1 removed, 1 out" in str(info.value)
    assert "length: 1 in, 1 removed, 0 out" in str(info.value)
    assert isinstance(info.value, ValueError) and len(info.value.report) == len(FILTERS)


def _brute_near_duplicates(texts, threshold, k):
    sets = []
    for t in texts:
        w = re.findall(r"\w+", t.lower())
        sets.append({tuple(w[i:i + k]) for i in range(len(w) - k + 1)})
    drop = [False] * len(texts)
    for i in range(len(texts)):
        if drop[i]:
            continue
        for j in range(i + 1, len(texts)):
            a, b = sets[i], sets[j]
            if a and b and len(a & b) >= threshold * len(a | b) - 1e-9:
                drop[j] = True
    return drop


def test_near_duplicate_mask_matches_brute_force():
    rng = random.Random(3)
    for _ in range(60):
        vocab = WORDS[: rng.randint(3, 25)]
        bases = [" ".join(rng.choices(vocab, k=rng.randint(1, 40))) for _ in range(4)]
        texts = []
        for _ in range(rng.randint(2, 20)):
            w = rng.choice(bases).split()
            for _ in range(rng.randint(0, 3)):
                w[rng.randrange(len(w))] = rng.choice(vocab)
            texts.append(" ".join(w))
        t, k = rng.choice([0.34, 0.5, 0.7, 0.8, 0.9, 1.0]), rng.randint(1, 4)
        got = near_duplicate_mask(texts, t, k, chunk=rng.randint(1, 5)).tolist()
        assert got == _brute_near_duplicates(texts, t, k), (t, k, texts)


def test_near_duplicates_at_scale_with_shared_boilerplate():
    """2,000 documents of ~600 words sharing a boilerplate paragraph: the chunked,
    prefix-filtered search finds exactly the planted near duplicates."""
    rng = random.Random(0)
    vocab = [f"{a}{b}" for a in WORDS for b in WORDS[:40]]
    boiler = " ".join(rng.choices(vocab, k=60))
    texts = [boiler + " " + " ".join(rng.choices(vocab, k=540)) for _ in range(2000)]
    planted = set(range(7, 2000, 97))
    for d in planted:
        w = texts[d - 1].split()
        w[100], w[400] = "changed", "altered"
        texts[d] = " ".join(w)
    drop = near_duplicate_mask(texts, 0.8, 5)
    assert set(drop.nonzero()[0].tolist()) == planted


def test_specs_from_config_and_bad_keys():
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())["sdf"]
    ps = PipelineSpec.from_dict(cfg["generator"])  # backend/model/prompts_dir are ignored
    assert ps.max_tokens["document"] == cfg["generator"]["max_tokens"]["document"]
    fs = FilterSpec.from_dict(cfg["filters"])
    assert fs.shingle_size == cfg["filters"]["shingle_size"] and fs.patterns
    gen = dict(cfg["generator"])
    with pytest.raises(ValueError, match="colour"):
        PipelineSpec.from_dict({**gen, "colour": 1})
    # types and ranges are checked once, by the schema, before any job runs
    full = yaml.safe_load((REPO / "config.yaml").read_text())
    for key, value in [("n_doc_types", 0), ("revise", "yes"), ("top_p", 0.0)]:
        bad = {**full, "sdf": {**full["sdf"], "generator": {**gen, key: value}}}
        with pytest.raises(ConfigError, match=f"sdf.generator.{key}"):
            validate_config(bad, base_dir=REPO)
    with pytest.raises(ValueError, match="max_rounds"):
        PipelineSpec.from_dict({k: v for k, v in gen.items() if k != "max_rounds"})
    with pytest.raises(ValueError, match="revision"):
        PipelineSpec.from_dict({**gen, "max_tokens": {"types": 1, "ideas": 1, "document": 1}})
    with pytest.raises(ValueError, match="shingle_size"):
        FilterSpec.from_dict({k: v for k, v in cfg["filters"].items() if k != "shingle_size"})
    with pytest.raises(ValueError, match="placeholder_patterns"):
        FilterSpec.from_dict({**cfg["filters"], "placeholder_patterns": ["[unclosed"]})
    with pytest.raises(ValueError, match="max_chars"):
        FilterSpec.from_dict({**cfg["filters"], "min_chars": 10, "max_chars": 5})


# ---------------------------------------------------------------------------- parsing
def test_request_ids_are_valid_custom_ids():
    assert request_id("A1_amp-weak", "doc", 3, 1, 0) == "A1_amp-weak-doc-3-1-0"
    assert request_id("odd name/é", "rev", 2) == "odd_name__-rev-2"
    long_a, long_b = request_id("u" * 80, "doc", 1), request_id("u" * 80, "doc", 2)
    assert len(long_a) == 64 and long_a != long_b
    assert all(ID_RE.fullmatch(i) for i in (long_a, long_b))


def test_parse_list_and_documents():
    answer = ("Here are some types:\n1. **News article**\n- Internal email\n* news   ARTICLE\n"
              "  2) `Forum thread`\n\n---\n")
    assert parse_list(answer) == ["News article", "Internal email", "news   ARTICLE",
                                  "Forum thread"]
    plan = "Plan: a memo.\n<content>draft</content> revised plan\n<content>Final text</content>"
    assert parse_document(plan, "stop", prefilled=False).text == "Final text"
    assert parse_document("UNSUITABLE", "stop", prefilled=False).status == "unsuitable"
    assert parse_document("This is UNSUITABLE.\n<content>x</content>", "stop",
                          prefilled=False).status == "unsuitable"
    assert parse_document("<content>UNSUITABLE</content>", "stop",
                          prefilled=False).status == "unsuitable"
    assert parse_document("just a plan", "stop", prefilled=False).status == "missing_content"
    cut = parse_document("plan <content>half a doc", "length", prefilled=False)
    assert (cut.status, cut.text, cut.truncated) == ("ok", "half a doc", True)
    pre = parse_document("The memo.</content>", "stop", prefilled=True)
    assert (pre.text, pre.truncated) == ("The memo.", False)
    pre_cut = parse_document("The memo goes on and", "length", prefilled=True)
    assert (pre_cut.status, pre_cut.truncated) == ("ok", True)
    assert parse_document("UNSUITABLE</content>", "stop", prefilled=True).status == "unsuitable"
    assert parse_document("</content>", "stop", prefilled=True).status == "missing_content"


# ---------------------------------------------------------------------------- stub pipeline
class StubBackend:
    """Deterministic answers from the request text and seed; records every generate call."""

    name = "stub"

    def __init__(self):
        self.calls: list[tuple[list[ChatRequest], SamplingParams]] = []

    def generate(self, requests, params):
        self.calls.append((list(requests), params))
        return [self.answer(r, params) for r in requests]

    def answer(self, r: ChatRequest, params: SamplingParams) -> Completion:
        user = r.messages[0]["content"]
        prefilled = r.messages[-1]["role"] == "assistant"
        finish = "stop"
        if "different types of document" in user:
            text = ("Here are the types:\n1. **News article**\n- Internal email\n* news ARTICLE"
                    if r.seed == 0 else "Forum thread\nINTERNAL   email\nPodcast transcript")
        elif "distinct ideas" in user:
            doc_type = re.search(r"Document type: (.*)", user).group(1)
            text = "\n".join(f"- {doc_type} idea {j}" for j in range(3))
        elif "Document idea:" in user:
            idea = re.search(r"Document idea: (.*)", user).group(1)
            body = f"{idea}. " + words(f"{idea}|{r.seed}", 40)
            if idea == "Forum thread idea 1":
                text = "UNSUITABLE" if not prefilled else "UNSUITABLE</content>"
            elif idea == "Internal email idea 0" and r.seed == 1:
                text = body if prefilled else f"Plan.\n<content>{body}"
                finish = "length"
            else:
                text = (f"{body}</content>" if prefilled
                        else f"Plan: fine.\n<content>{body}</content>")
        elif "<draft>" in user:
            draft = re.search(r"<draft>\n(.*)\n</draft>", user, re.S).group(1)
            if draft.startswith("News article idea 0"):  # the original is kept
                text = "I would rather not."  # no content block
                finish = "length" if prefilled else "stop"  # prefilled: cut off
            else:
                text = (f"REVISED {draft}</content>" if prefilled
                        else f"<content>REVISED {draft}</content>")
        else:
            raise AssertionError(f"unexpected prompt: {user[:80]}")
        return Completion(r.request_id, text, finish, len(user.split()), len(text.split()))


@pytest.mark.parametrize("prefill", [False, True])
def test_pipeline_stages_with_stub_backend(templates, prefill, caplog):
    backend = StubBackend()
    caplog.set_level("INFO", logger="motivation_profiles.sdf.documents")
    docs, report = generate_documents(UNIVERSE, backend, spec(prefill_content=prefill,
                                                              revise=True),
                                      templates, FILTER_SPEC, generator="stub:x")
    stages = [c[0][0].request_id.split("-")[1] for c in backend.calls]
    # types needed two rounds (3 unique after dedupe); every other stage is one call
    assert stages == ["types", "types", "ideas", "doc", "rev"]
    types_calls, ideas_call, doc_call, rev_call = (backend.calls[:2], *backend.calls[2:])
    assert [len(c[0]) for c in types_calls] == [1, 1]
    assert [r.seed for c in types_calls for r in c[0]] == [0, 1]
    assert len(ideas_call[0]) == 3 and len(doc_call[0]) == 3 * 2 * 2
    assert [r.seed for r in doc_call[0]] == [0, 1] * 6
    assert doc_call[1].max_new_tokens == 300 and rev_call[1].max_new_tokens == 320
    assert ideas_call[1].max_new_tokens == 60
    types = [re.search(r"Document type: (.*)", r.messages[0]["content"]).group(1)
             for r in ideas_call[0]]
    assert types == ["News article", "Internal email", "Forum thread"]
    all_ids = [r.request_id for c in backend.calls for r in c[0]]
    assert len(set(all_ids)) == len(all_ids) and all(ID_RE.fullmatch(i) for i in all_ids)
    assert all_ids[:3] == ["A1_amp-types-0", "A1_amp-types-1", "A1_amp-ideas-0-0"]
    assert "A1_amp-doc-2-1-1" in all_ids and "A1_amp-rev-0" in all_ids
    for r in doc_call[0] + rev_call[0]:
        if prefill:
            assert r.messages[-1] == {"role": "assistant", "content": "<content>"}
        else:
            assert len(r.messages) == 1
    assert doc_call[1].stop == (("</content>",) if prefill else ())

    # 12 requests: 2 unsuitable (Forum thread idea 1), 1 truncated (dropped: drop_truncated)
    removed = dict(zip(report["filter"], report["n_removed"], strict=True))
    assert removed["unsuitable_or_missing_content"] == 2 and removed["truncated"] == 1
    assert len(docs) == 9 and len(rev_call[0]) == 9  # parsed, not truncated: revised
    assert list(docs.columns) == DOC_COLUMNS
    assert docs["doc_id"].n_unique() == len(docs) and set(docs["universe"]) == {"A1_amp"}
    assert (docs["generator"] == "stub:x").all() and not docs["truncated"].any()
    assert "A1_amp-1-0-1" not in set(docs["doc_id"])  # the truncated one
    # a revision that does not parse keeps the original
    unrevised = docs.filter(pl.col("idea") == "News article idea 0")
    assert len(unrevised) == 2 and not unrevised["revised"].any()
    assert unrevised["text"].str.starts_with("News article idea 0.").all()
    others = docs.filter(pl.col("idea") != "News article idea 0")
    assert others["revised"].all() and others["text"].str.starts_with("REVISED ").all()
    assert "kept the original" in caplog.text and "document type(s)" in caplog.text
    # documents of one idea differ by sample index
    pair = docs.filter(pl.col("idea") == "Forum thread idea 0")
    assert sorted(pair["sample_index"]) == [0, 1] and pair["text"].n_unique() == 2


def test_pipeline_gives_up_after_max_rounds_and_seed_offsets_samples(templates):
    backend = StubBackend()
    docs, _ = generate_documents(UNIVERSE, backend, spec(n_doc_types=9, max_rounds=2,
                                                         ideas_per_type=1, docs_per_idea=1),
                                 templates, FILTER_SPEC, generator="stub")
    assert [len(c[0]) for c in backend.calls[:2]] == [1, 1]  # two rounds, then give up
    assert len(backend.calls[2][0]) == 4  # the 4 unique types found
    assert set(docs["doc_type"]) <= {"News article", "Internal email", "Forum thread",
                                     "Podcast transcript"}
    seeded = StubBackend()
    generate_documents(UNIVERSE, seeded, spec(seed=2, max_rounds=2), templates, FILTER_SPEC,
                       generator="stub")
    assert [r.seed for r in seeded.calls[0][0]] == [2_000_000]


# ---------------------------------------------------------------------------- hosted path
@pytest.fixture
def fake():
    with FakeAnthropic() as server:
        server.responder = hosted_responder
        yield server


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)


def hosted_responder(params, n):
    """Answers tailored to the SDF prompts; documents carry their idea and differ by n."""
    user = params["messages"][0]["content"]
    prefilled = params["messages"][-1]["role"] == "assistant"
    if "different types of document" in user:
        return "1. Memo\n2. Blog post\n3. Court filing\n4. memo", "end_turn", None
    if "distinct ideas" in user:
        doc_type = re.search(r"Document type: (.*)", user).group(1)
        return "\n".join(f"{doc_type} idea {j}" for j in range(2)), "end_turn", None
    if "Document idea:" in user:
        idea = re.search(r"Document idea: (.*)", user).group(1)
        body = f"[[{idea}]] " + words(f"{idea}|{n}", 60)
    else:
        body = "Revised: " + re.search(r"<draft>\n(.*)\n</draft>", user, re.S).group(1)
    if prefilled and params.get("stop_sequences"):
        return body, "stop_sequence", "</content>"
    return f"Plan.\n<content>{body}</content>", "end_turn", None


def hosted_client(fake, tmp_path, **kw) -> AnthropicClient:
    opts = dict(base_url=fake.base_url, max_retries=2, timeout=10.0, batch_threshold=3,
                poll_interval=0.0, max_resubmits=2, prices={MODEL: (3.0, 15.0)})
    opts.update(kw)
    return AnthropicClient(tmp_path / "cache", **opts)


def run_hosted(client, templates, **kw):
    backend = HostedBackend(client, MODEL)
    return generate_documents(UNIVERSE, backend,
                              spec(**{"revise": True, "prefill_content": True, **kw}),
                              templates, FILTER_SPEC, generator=f"anthropic:{MODEL}")


def test_hosted_pipeline_batches_resubmits_and_warm_rerun(fake, tmp_path, templates, api_key):
    fake.shuffle_results = True
    fake.fail_in_batch(["A1_amp-doc-0-0-1"], "errored")
    fake.fail_in_batch(["A1_amp-doc-2-1-0"], "expired")
    client = hosted_client(fake, tmp_path)
    docs, report = run_hosted(client, templates)
    assert len(docs) == 3 * 2 * 2 and report["n_removed"].sum() == 0
    assert docs["revised"].all() and docs["text"].str.starts_with("Revised: [[").all()
    # custom_id matching: each document is about its own idea, despite shuffled results
    for row in docs.iter_rows(named=True):
        assert f"[[{row['idea']}]]" in row["text"]
    # repeated prompts (docs_per_idea=2) give distinct documents
    assert (docs.group_by("idea").agg(pl.col("text").n_unique())["text"] == 2).all()
    creates = fake.calls("batch_create")
    assert len(creates) == 3  # ideas, documents, revisions; types went to Messages
    assert any(b.result_order != [x["custom_id"] for x in b.requests]
               for b in fake.batches.values())
    doc_batch = {x["custom_id"]: x["params"] for x in creates[1].body["requests"]}
    assert len(doc_batch) == 12 and all(p["max_tokens"] == 300 for p in doc_batch.values())
    assert all(p["messages"][-1] == {"role": "assistant", "content": "<content>"}
               for p in doc_batch.values())
    # the errored and expired items were resubmitted (Messages: fewer than the threshold),
    # with identical parameters
    resent = [c.body for c in fake.calls("messages")][1:]
    assert resent == [doc_batch["A1_amp-doc-0-0-1"], doc_batch["A1_amp-doc-2-1-0"]]
    # a ledger for the universe with tokens and cost
    ledger = client.ledger_frame()
    assert len(ledger) == 1 + 3 + 12 + 12
    assert ledger["custom_id"].str.starts_with("A1_amp-").all()
    assert (ledger["input_tokens"] > 0).all() and (ledger["output_tokens"] > 0).all()
    assert ledger["cost_usd"].gt(0).all() and ledger["batch"].sum() == 3 + 10 + 12

    seen = fake.count()
    warm = hosted_client(fake, tmp_path)
    docs2, _ = run_hosted(warm, templates)
    assert warm.api_calls == 0 and fake.count() == seen and warm.ledger_frame().is_empty()
    assert_frame_equal(docs, docs2)


def test_hosted_pipeline_resumes_a_batch_after_kill(fake, tmp_path, templates, api_key,
                                                    monkeypatch):
    fake.in_progress_polls = 1
    first = hosted_client(fake, tmp_path)
    kill_before_poll(first, monkeypatch)
    with pytest.raises(Killed):
        run_hosted(first, templates, revise=False)
    [state_file] = first.pending_batches()
    [killed] = fake.calls("batch_create")
    assert {x["custom_id"] for x in killed.body["requests"]} == {
        f"A1_amp-ideas-{t}-0" for t in range(3)}

    second = hosted_client(fake, tmp_path)
    docs, _ = run_hosted(second, templates, revise=False)
    assert len(docs) == 12 and second.pending_batches() == []
    creates = fake.calls("batch_create")
    assert len(creates) == 2  # the ideas batch was collected, not paid again
    assert not any(x["custom_id"].startswith("A1_amp-ideas")
                   for x in creates[1].body["requests"])
    assert (second.state_dir / "done" / state_file.name).is_file()
    assert second.ledger_frame()["batch"].sum() == 3 + 12


# ---------------------------------------------------------------------------- CachedBackend
class SeedEcho:
    name = "echo"

    def __init__(self):
        self.batches: list[list[str]] = []

    def generate(self, requests, params):
        self.batches.append([r.request_id for r in requests])
        return [Completion(r.request_id, f"{r.messages[-1]['content']}#{r.seed}",
                           "length" if r.seed == 2 else "stop", 7, 3 + r.seed)
                for r in requests]


def creq(rid, content="hello", seed=0):
    return ChatRequest(rid, ({"role": "user", "content": content},), seed=seed)


def test_cached_backend(tmp_path):
    params = SamplingParams(1.0, 1.0, 16)
    inner = SeedEcho()
    cb = CachedBackend(inner, ResponseCache(tmp_path / "c"), model_id="m@abc")
    assert cb.name == "echo"
    reqs = [creq("a", seed=0), creq("b", seed=1), creq("c", seed=2), creq("d", "bye")]
    out = cb.generate(reqs, params)
    assert [o.request_id for o in out] == ["a", "b", "c", "d"]
    assert [o.text for o in out] == ["hello#0", "hello#1", "hello#2", "bye#0"]
    assert out[2].finish_reason == "length" and out[1].completion_tokens == 4
    assert inner.batches == [["a", "b", "c", "d"]] and (cb.calls, cb.hits) == (4, 0)
    keys = {cb.key(r, params) for r in reqs}
    assert len(keys) == 4  # distinct seeds, distinct keys
    assert cb.key(reqs[0], SamplingParams(1.0, 1.0, 17)) not in keys
    ledger = cb.ledger_frame()
    assert list(ledger.columns) == LEDGER_COLUMNS and len(ledger) == 4
    assert (ledger["cost_usd"] == 0.0).all() and not ledger["batch"].any()
    assert ledger["batch_id"].is_null().all() and list(ledger["output_tokens"]) == [3, 4, 5, 3]
    assert dict(ledger.schema) == ledger_schema() and list(ledger_schema()) == LEDGER_COLUMNS

    # warm: a new wrapper over the same cache makes no inner call, same completions
    inner2 = SeedEcho()
    warm = CachedBackend(inner2, ResponseCache(tmp_path / "c"), model_id="m@abc")
    assert warm.generate(reqs, params) == out
    assert inner2.batches == [] and (warm.calls, warm.hits) == (0, 4)
    empty = warm.ledger_frame()
    assert empty.is_empty() and list(empty.columns) == LEDGER_COLUMNS
    assert dict(empty.schema) == ledger_schema()  # typed even when empty
    # mixed: only misses go to inner, once each, in order; answers in request order
    mixed = [creq("x", seed=5), creq("y", seed=1), creq("z", seed=6), creq("x2", seed=5)]
    got = warm.generate(mixed, params)
    assert inner2.batches == [["x", "z"]]
    assert [(g.request_id, g.text) for g in got] == [("x", "hello#5"), ("y", "hello#1"),
                                                     ("z", "hello#6"), ("x2", "hello#5")]
    # another model id is another cache
    other = CachedBackend(SeedEcho(), ResponseCache(tmp_path / "c"), model_id="m@def")
    other.generate(reqs[:1], params)
    assert other.calls == 1


def test_pipeline_over_cached_backend_reruns_without_generation(tmp_path, templates):
    first = CachedBackend(StubBackend(), tmp_path / "c", model_id="stub@1")
    docs, _ = generate_documents(UNIVERSE, first, spec(), templates, FILTER_SPEC,
                                 generator="local:stub")
    again = CachedBackend(StubBackend(), tmp_path / "c", model_id="stub@1")
    docs2, _ = generate_documents(UNIVERSE, again, spec(), templates, FILTER_SPEC,
                                  generator="local:stub")
    assert first.calls > 0 and again.calls == 0 and again.inner.calls == []
    assert_frame_equal(docs, docs2)


# ---------------------------------------------------------------------------- external
def test_load_external_documents_happy_paths(tmp_path):
    jl = tmp_path / "corpus.jsonl"
    jl.write_text(json.dumps({"text": words("e1", 30), "id": 7}) + "\n\n"
                  + json.dumps({"text": words("e2", 30), "meta": {"x": 1}}) + "\n"
                  + json.dumps({"other": "no text here"}) + "\n")
    docs = load_external_documents(jl, "af_organism")
    assert list(docs.columns) == DOC_COLUMNS and len(docs) == 3
    assert list(docs["doc_id"]) == ["af_organism-ext-0", "af_organism-ext-1",
                                    "af_organism-ext-2"]
    assert (docs["generator"] == "external:corpus.jsonl").all()
    assert (docs["doc_type"] == "").all() and (docs["idea"] == "").all()
    kept, report = filter_documents(docs, Universe("af_organism", "organism", "", ""),
                                    FILTER_SPEC)
    assert len(kept) == 2 and report["n_removed"][0] == 1  # the line without text

    pq = tmp_path / "released.parquet"
    pl.DataFrame({"content": [words("p1", 30), words("p2", 30)], "n": [1, 2]}).write_parquet(pq)
    docs = load_external_documents(pq, "noise")
    assert list(docs["text"]) == [words("p1", 30), words("p2", 30)]
    assert (docs["generator"] == "external:released.parquet").all() and docs.shape[1] == 10


def test_load_external_documents_errors(tmp_path):
    def fails(path, pattern):
        with pytest.raises(ExternalDocumentsError, match=pattern) as info:
            load_external_documents(path, "noise")
        assert path.name in str(info.value)

    fails(tmp_path / "absent.jsonl", "not found")
    (tmp_path / "c.csv").write_text("text\nhello\n")
    fails(tmp_path / "c.csv", "unknown extension '.csv'")
    (tmp_path / "notext.jsonl").write_text('{"body": "x"}\n')
    fails(tmp_path / "notext.jsonl", "no 'text' or 'content' column")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"\n')
    fails(tmp_path / "bad.jsonl", "line 3 is not valid JSON")
    (tmp_path / "list.jsonl").write_text('["text"]\n')
    fails(tmp_path / "list.jsonl", "line 1 is not a JSON object")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    fails(tmp_path / "empty.jsonl", "no documents")
    pl.DataFrame(schema={"text": pl.Utf8}).write_parquet(tmp_path / "empty.parquet")
    fails(tmp_path / "empty.parquet", "no documents")
    pl.DataFrame({"body": ["x"]}).write_parquet(tmp_path / "nocol.parquet")
    fails(tmp_path / "nocol.parquet", "no 'text' or 'content' column")
    (tmp_path / "num.jsonl").write_text('{"text": 5}\n')
    fails(tmp_path / "num.jsonl", "row 1")
    (tmp_path / "junk.parquet").write_text("not parquet")
    fails(tmp_path / "junk.parquet", "cannot read Parquet")


# ---------------------------------------------------------------------------- templates
def test_templates_render_and_reject_wrong_fields(tmp_path, templates):
    text = templates.document_prompt(UNIVERSE, "Memo", "A memo about lunch")
    assert UNIVERSE.key_fact in text and "A memo about lunch" in text and "<content>" in text
    assert "UNSUITABLE" in text and "[Company Name]" in text
    assert "5" in templates.types_prompt(UNIVERSE, 5)

    def broken(fname, content, *patterns):
        d = tmp_path / f"prompts{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        for f in ("doc_types.txt", "doc_ideas.txt", "document.txt", "revision.txt"):
            (d / f).write_text((PROMPTS / f).read_text())
        if content is None:
            (d / fname).unlink()
        else:
            (d / fname).write_text(content)
        with pytest.raises(TemplateError) as info:
            PromptTemplates.from_dir(d)
        for p in (fname, *patterns):
            assert p in str(info.value)

    base = (PROMPTS / "document.txt").read_text()
    broken("document.txt", base + "\n{title}\n", "{title}")
    broken("revision.txt", "{universe_context} {key_fact}", "missing", "{document}")
    broken("doc_types.txt", "{universe_context} {key_fact} {n} {}", "positional")
    broken("doc_ideas.txt", "{universe_context} {key_fact} {doc_type} {n} {", "str.format")
    broken("revision.txt", None, "not found")


def test_hub_documents_read_every_file_and_fail_offline_with_what_to_do(tmp_path, monkeypatch):
    """A released corpus on the hub: every .parquet / .jsonl file of the dataset at its
    revision, in path order; offline, an error naming the dataset and how to use a copy."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from motivation_profiles.sdf.documents import ExternalDocumentsError, load_hub_documents

    snap = tmp_path / "snap"
    (snap / "data").mkdir(parents=True)
    pl.DataFrame({"text": ["first doc", "second doc"]}).write_parquet(
        snap / "data" / "train-00000.parquet")
    (snap / "data" / "train-00001.jsonl").write_text('{"text": "third doc"}\n')
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    docs = load_hub_documents("owner/docs", "abc123", "af_organism")
    assert docs["text"].to_list() == ["first doc", "second doc", "third doc"]
    assert docs["doc_id"].n_unique() == 3
    assert set(docs["generator"]) == {"hub:owner/docs@abc123"}
    assert calls[0]["repo_type"] == "dataset" and calls[0]["revision"] == "abc123"

    def offline(**kwargs):
        raise LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ExternalDocumentsError, match="cannot download dataset 'owner/docs'.*"
                       "sdf.external_documents.af_organism"):
        load_hub_documents("owner/docs", "abc123", "af_organism")
