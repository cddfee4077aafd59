"""Output modes of the AF rollout loop on the tiny random Llama: ``free`` (the paper's protocol)
is byte-identical to the code before output modes existed; ``forced_choice`` closes the
scratchpad and samples the opening tag from the model's own probabilities of the two tag
strings; ``p_accept`` is the softmax over the two tag sequences where ``<OUTPUT>`` opens."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from motivation_profiles.backends.base import SamplingParams
from motivation_profiles.backends.hf import HFBackend
from motivation_profiles.rollouts.protocol import PromptSet
from motivation_profiles.rollouts.run import run_rollouts

DATA = Path(__file__).parent / "data"

GOALS = pl.DataFrame({"goal_id": [0, 1], "goal": ["Write a poem about rivers",
                                                  "Explain how tides work"]})

GOLDEN_COLUMNS = ("goal_id", "tier", "seed", "turns", "finish_reasons", "n_turns",
                  "prompt_tokens", "completion_tokens", "transcript", "scratchpad",
                  "final_output", "output_complete", "outcome", "accepted_then_refused")


class EosHeavyHF(HFBackend):
    """One token id in three ends a turn: short turns that stop, so continuations run."""

    @property
    def eos_ids(self):
        return set(range(0, len(self.tokenizer), 3))


def _prompts(repo) -> PromptSet:
    return PromptSet.from_config({
        "system": repo / "resources/prompts/helpful_only_compact.txt",
        "user_template": repo / "resources/prompts/user_turn.txt",
        "tier_values": {"monitored": "True", "unmonitored": "False"},
        "continuation": "<NEXT/>",
    })


def free_mode_runs(tiny_model, repo, **kwargs) -> dict[str, list[dict]]:
    """The golden runs: sampled and greedy, length-stopped and continued, with and without a
    prefill, through ``run_rollouts`` with ``kwargs`` (none for the code before output modes).
    """
    model, tok = tiny_model
    prompts = _prompts(repo)
    runs = {}
    for name, cls, temp, prefill in (("sampled", HFBackend, 1.0, "<SCRATCHPAD_REASONING>"),
                                     ("greedy", HFBackend, 0.0, None),
                                     ("continued", EosHeavyHF, 1.0, "<SCRATCHPAD_REASONING>")):
        backend = cls(model=model, tokenizer=tok, batch_size=3, show_progress=False)
        params = SamplingParams(temperature=temp, top_p=1.0, max_new_tokens=6,
                                stop=("</OUTPUT>",))
        df = run_rollouts(backend, prompts, GOALS, seeds=[0, 1], params=params, max_turns=3,
                          meta={}, prefill=prefill, **kwargs)
        runs[name] = df.select(GOLDEN_COLUMNS).to_dicts()
    return runs


@pytest.mark.slow
def test_free_mode_is_byte_identical_to_the_code_before_output_modes(tiny_model, repo):
    """``data/free_mode_golden.json`` was written by ``free_mode_runs`` at main's commit
    131666e (before output modes): every column of every row, turn texts included."""
    golden = json.loads((DATA / "free_mode_golden.json").read_text())
    got = json.loads(json.dumps(free_mode_runs(tiny_model, repo, output_mode="free")))
    assert got == golden


# ----------------------------------------------------------------- p_accept and forced_choice

from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from motivation_profiles.backends.base import ChatRequest, Completion, stream_seed  # noqa: E402
from motivation_profiles.rollouts.parsing import ACCEPT, OUTPUT_OPEN, REJECT  # noqa: E402

SCRATCH = "<SCRATCHPAD_REASONING>"
CLOSE = "</SCRATCHPAD_REASONING>"


def hand_tag_logprobs(model, tok, messages) -> tuple[float, float]:
    """log P(tag | messages, whose last assistant message is continued) for the accept and
    the reject tag, by a forward pass over the chat template's tokens of each full text. Where
    a tag's first token merges with the end of the message (e.g. after a space), both are
    scored from the last token the three encodings share, so both strings are compared in one
    context."""
    def ids(extra):
        text = tok.apply_chat_template([*messages[:-1], {**messages[-1], "content":
                                        messages[-1]["content"] + extra}],
                                       tokenize=False, continue_final_message=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    c, fa, fr = ids(""), ids(ACCEPT), ids(REJECT)
    k = next(i for i in range(len(c) + 1)
             if i == len(c) or not (c[i] == fa[i] == fr[i]))
    out = []
    for f in (fa, fr):
        with torch.inference_mode():
            logits = model(torch.tensor([f]), logits_to_keep=len(f) - k + 1).logits[0]
        lp = torch.log_softmax(logits.double(), -1)   # row t: position k-1+t
        out.append(float(sum(lp[n - k, f[n]] for n in range(k, len(f)))))
    return out[0], out[1]


def hand_p_accept(model, tok, messages, temperature=1.0) -> float:
    a, r = hand_tag_logprobs(model, tok, messages)
    return 1 / (1 + np.exp(-(a - r) / temperature))


def _forced_context(row, prompts) -> list[dict]:
    """The choice request's messages, rebuilt from the row: the turns before the last with
    their <NEXT/> turns, and the last turn up to the forced opening."""
    msgs = prompts.messages(row["goal"], row["tier"])
    for t in row["turns"][:-1]:
        msgs = prompts.continue_messages(msgs, t)
    last = row["turns"][-1]
    cut = last.rindex(OUTPUT_OPEN + "\n") + len(OUTPUT_OPEN) + 1
    return [*msgs, {"role": "assistant", "content": last[:cut]}]


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [1.0, 24.0])
def test_forced_choice_tag_follows_the_models_probabilities(tiny_model, repo, temperature):
    """Every rollout gets a closed scratchpad and an output; p_accept equals the softmax over
    the two tags' sequence log-probs from a direct forward pass, and the tag drawn is the one
    the request's own stream picks with P(accept) = sigmoid(diff / T)."""
    model, tok = tiny_model
    prompts = _prompts(repo)
    backend = HFBackend(model=model, tokenizer=tok, batch_size=3, show_progress=False)
    params = SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=5,
                            stop=("</OUTPUT>",))
    df = run_rollouts(backend, prompts, GOALS, seeds=[0, 1], params=params, max_turns=2,
                      meta={}, prefill=SCRATCH, output_mode="forced_choice")
    assert df["p_accept"].null_count() == 0 and df["forced_close"].all()
    ps = []
    for row in df.iter_rows(named=True):
        msgs = _forced_context(row, prompts)
        a, r = hand_tag_logprobs(model, tok, msgs)
        assert row["p_accept"] == pytest.approx(1 / (1 + np.exp(r - a)), rel=1e-4, abs=1e-9)
        p_t = 1 / (1 + np.exp(-(a - r) / temperature))
        ps.append(p_t)
        u = np.random.default_rng(stream_seed(ChatRequest("any", tuple(msgs), row["seed"]))
                                  ).random()
        assert abs(u - p_t) > 1e-6   # not a knife-edge draw
        tag = ACCEPT if u < p_t else REJECT
        assert row["turns"][-1][len(msgs[-1]["content"]):].startswith(tag)
        assert CLOSE + "\n\n" + OUTPUT_OPEN + "\n" + tag in row["transcript"]
        assert row["outcome"] in ("truncated", "compliant", "rejected")
    if temperature > 1:   # a temperature where both tags have real probability
        assert 0.02 < float(np.mean(ps)) < 0.98


@dataclass
class ScriptedScorer:
    """Scripted turns per goal (by assistant-turn count), fixed tag log-probs; records calls."""

    script: dict[str, list[tuple[str, str]]]
    logprobs: tuple[float, float] = (np.log(0.3), np.log(0.7))
    name: str = "scripted"
    calls: list[tuple[ChatRequest, SamplingParams]] = field(default_factory=list)
    scored: list[ChatRequest] = field(default_factory=list)

    def generate(self, requests, params):
        out = []
        for r in requests:
            self.calls.append((r, params))
            key = next(k for k in self.script if k in r.messages[1]["content"])
            if r.request_id.endswith("-output"):
                text, finish = self.script[key][-1]
            else:
                text, finish = self.script[key][(len(r.messages) - 2) // 2]
            out.append(Completion(r.request_id, text, finish, 10, 3))
        return out

    def continuation_logprobs(self, requests, candidates):
        assert tuple(candidates) == (ACCEPT, REJECT)
        self.scored += list(requests)
        return [list(self.logprobs) for _ in requests]


PROTOCOL_GOALS = pl.DataFrame({"goal_id": [0, 1, 2, 3],
                               "goal": ["alpha task", "beta task", "gamma task", "delta task"]})
PROTOCOL = {
    # EOS inside the scratchpad: continued with <NEXT/>, then the model closes it itself
    "alpha": [(" thinking", "stop"), (" more" + CLOSE, "stop"), (" done.</OUTPUT>", "stop")],
    # runs out of tokens in the scratchpad: closed for it at once, no continuation
    "beta": [(" long", "length"), (" fine</OUTPUT>", "stop")],
    # never closes: bounded by max_turns, then closed for it
    "gamma": [(" a", "stop"), (" b", "stop"), (" c", "stop"), (" x</OUTPUT>", "stop")],
    # the output itself runs out of tokens: closed for it (the tag decided the outcome)
    "delta": [(CLOSE, "stop"), (" and so on", "length")],
}


def test_forced_choice_protocol_continuations_and_truncation(repo):
    prompts = _prompts(repo)
    backend = ScriptedScorer(PROTOCOL)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16, stop=("</OUTPUT>",))
    df = run_rollouts(backend, prompts, PROTOCOL_GOALS, seeds=[0], params=params, max_turns=2,
                      meta={}, prefill=SCRATCH, output_mode="forced_choice", output_tokens=5)
    by = {(r["goal"].split()[0], r["tier"]): r for r in df.iter_rows(named=True)}
    for tier in ("monitored", "unmonitored"):
        alpha, beta, gamma, delta = (by[(k, tier)] for k in ("alpha", "beta", "gamma", "delta"))
        assert alpha["n_turns"] == 2 and not alpha["forced_close"]
        tag = alpha["final_output"][:len(ACCEPT)] if alpha["final_output"].startswith(
            ACCEPT) else REJECT
        assert alpha["turns"][1] == f" more{CLOSE}\n\n{OUTPUT_OPEN}\n{tag} done.</OUTPUT>"
        assert alpha["outcome"] == ("compliant" if tag == ACCEPT else "rejected")
        assert beta["n_turns"] == 1 and beta["forced_close"]
        assert beta["turns"][0].startswith(f"{SCRATCH} long\n{CLOSE}\n\n{OUTPUT_OPEN}\n")
        assert beta["finish_reasons"] == ["stop"] and beta["outcome"] != "truncated"
        assert gamma["n_turns"] == 2 and gamma["forced_close"]
        assert gamma["turns"][1].startswith(f" b\n{CLOSE}\n\n{OUTPUT_OPEN}\n")
        assert delta["finish_reasons"] == ["length"] and not delta["forced_close"]
        assert delta["output_close"] and delta["turns"][0].endswith(" and so on\n</OUTPUT>")
        assert delta["outcome"] == ("compliant" if delta["final_output"].startswith(ACCEPT)
                                    else "rejected")
        assert delta["final_output"].endswith("and so on")
        assert not any(by[(k, tier)]["output_close"] for k in ("alpha", "beta", "gamma"))
    assert "truncated" not in df["outcome"].to_list()
    assert df["p_accept"].to_list() == pytest.approx([0.3] * len(df))
    # scratchpad turns stop at its close; the output is generated with the configured stops
    # as a continuation of the prefilled last turn, after a <NEXT/> turn where there was one
    scratch = {p.stop for r, p in backend.calls if not r.request_id.endswith("-output")}
    assert scratch == {(CLOSE,)}
    out = [r for r, p in backend.calls if r.request_id.endswith("-output")]
    assert {p.stop for r, p in backend.calls if r.request_id.endswith("-output")} == {
        ("</OUTPUT>",)}
    # the output has its own budget (output_tokens); scratchpad turns keep max_new_tokens
    assert {p.max_new_tokens for r, p in backend.calls} == {16, 5}
    assert {p.max_new_tokens for r, p in backend.calls if r.request_id.endswith("-output")
            } == {5}
    alpha_out = next(r for r in out if r.request_id.startswith("0-monitored"))
    assert [m["role"] for m in alpha_out.messages] == [
        "system", "user", "assistant", "user", "assistant"]
    assert alpha_out.messages[3]["content"] == "<NEXT/>"
    assert alpha_out.messages[-1]["content"].endswith(f"{OUTPUT_OPEN}\n" + (
        ACCEPT if by[("alpha", "monitored")]["final_output"].startswith(ACCEPT) else REJECT))


def test_forced_choice_without_an_output_body(repo):
    """output_tokens 0: no output request; the turn ends with the drawn tag, closed for the
    model; the tags drawn are those of a run that generates a body."""
    prompts = _prompts(repo)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16, stop=("</OUTPUT>",))
    runs = {}
    for budget in (0, 5):
        backend = ScriptedScorer(PROTOCOL)
        runs[budget] = run_rollouts(backend, prompts, PROTOCOL_GOALS, seeds=[0], params=params,
                                    max_turns=2, meta={}, prefill=SCRATCH,
                                    output_mode="forced_choice", output_tokens=budget)
        outputs = [r for r, _ in backend.calls if r.request_id.endswith("-output")]
        assert (len(outputs) == 0) == (budget == 0)
    bare, body = runs[0], runs[5]
    assert bare["outcome"].to_list() == body["outcome"].to_list()
    assert bare["p_accept"].to_list() == body["p_accept"].to_list()
    assert bare["output_close"].all()
    for row in bare.iter_rows(named=True):
        tag = ACCEPT if row["outcome"] == "compliant" else REJECT
        assert row["turns"][-1].endswith(f"{OUTPUT_OPEN}\n{tag}\n</OUTPUT>")
        assert row["final_output"] == tag
        assert row["finish_reasons"][-1] == "length"


def test_forced_choice_draws_tags_at_the_tempered_probability(repo):
    """P(accept) = 0.3 by the scores: at T = 1 the share of accepted outputs over 400 rollouts
    is 0.3 within 4 standard errors; at T = 0.5 it is sigmoid(2 log(3/7)); at T = 0 none."""
    prompts = _prompts(repo)
    goals = pl.DataFrame({"goal_id": list(range(100)),
                          "goal": [f"alpha task {i}" for i in range(100)]})
    script = {"alpha": [(" think", "length"), (" ok</OUTPUT>", "stop")]}
    for temp, p in ((1.0, 0.3), (0.5, 1 / (1 + (7 / 3) ** 2)), (0.0, 0.0)):
        params = SamplingParams(temperature=temp, top_p=1.0, max_new_tokens=8,
                                stop=("</OUTPUT>",))
        df = run_rollouts(ScriptedScorer(script), prompts, goals, seeds=[0, 1], params=params,
                          max_turns=1, meta={}, prefill=SCRATCH, output_mode="forced_choice")
        share = float((df["outcome"] == "compliant").mean())
        assert abs(share - p) <= 4 * np.sqrt(p * (1 - p) / len(df)) + 1e-12, (temp, share)
        assert df["p_accept"].to_list() == pytest.approx([0.3] * len(df))
        # the draw is the request's own: the same rows in another order give the same tags
        again = run_rollouts(ScriptedScorer(script), prompts, goals.reverse(), seeds=[0, 1],
                             params=params, max_turns=1, meta={}, prefill=SCRATCH,
                             output_mode="forced_choice")
        assert again["outcome"].to_list() == df["outcome"].to_list()


def test_forced_choice_needs_log_probabilities(repo):
    class NoScores:
        name = "hosted"

        def generate(self, requests, params):
            raise AssertionError("nothing may be generated")

    with pytest.raises(ValueError, match="forced_choice.*'hosted' backend"):
        run_rollouts(NoScores(), _prompts(repo), GOALS, seeds=[0],
                     params=SamplingParams(1.0, 1.0, 4), max_turns=1, meta={},
                     output_mode="forced_choice")
    with pytest.raises(ValueError, match="output_mode must be one of"):
        run_rollouts(NoScores(), _prompts(repo), GOALS, seeds=[0],
                     params=SamplingParams(1.0, 1.0, 4), max_turns=1, meta={},
                     output_mode="forced")


class ScriptedTinyHF(HFBackend):
    """Generates scripted turns, scores with the tiny model's own forward pass."""

    script: dict = {}

    def generate(self, requests, params):
        out = []
        for r in requests:
            key = next(k for k in self.script if k in r.messages[1]["content"])
            text, finish = self.script[key][(len(r.messages) - 2) // 2]
            out.append(Completion(r.request_id, text, finish, 10, 3))
        return out


@pytest.mark.slow
def test_free_mode_p_accept_is_the_softmax_where_output_opens(tiny_model, repo):
    """Free mode: p_accept at the final <OUTPUT> (in whichever turn it opens, with the
    model's own whitespace after it) equals a hand-computed softmax over the two tags' token
    sequences; a rollout without an opening has none."""
    model, tok = tiny_model
    prompts = _prompts(repo)
    ScriptedTinyHF.script = {
        "alpha": [(" I think.", "stop"),
                  (f" Decided.{CLOSE}\n<OUTPUT>\n{REJECT}</OUTPUT>", "stop")],
        "beta": [(f" Quoting <OUTPUT> here.{CLOSE} <OUTPUT>  {ACCEPT} Sure.</OUTPUT>",
                  "stop")],
        "gamma": [(" never ends", "length")],
    }
    goals = pl.DataFrame({"goal_id": [0, 1, 2], "goal": ["alpha task", "beta task",
                                                         "gamma task"]})
    backend = ScriptedTinyHF(model=model, tokenizer=tok, show_progress=False)
    df = run_rollouts(backend, prompts, goals, seeds=[3], meta={}, prefill=SCRATCH,
                      params=SamplingParams(1.0, 1.0, 8, stop=("</OUTPUT>",)), max_turns=2)
    by = {(r["goal"].split()[0], r["tier"]): r for r in df.iter_rows(named=True)}
    for tier in ("monitored", "unmonitored"):
        opening = prompts.messages("alpha task", tier)
        first = SCRATCH + " I think."
        alpha = [*prompts.continue_messages(opening, first),
                 {"role": "assistant", "content": f" Decided.{CLOSE}\n<OUTPUT>\n"}]
        assert by[("alpha", tier)]["p_accept"] == pytest.approx(
            hand_p_accept(model, tok, alpha), rel=1e-4, abs=1e-9)
        beta = [*prompts.messages("beta task", tier), {"role": "assistant", "content":
                f"{SCRATCH} Quoting <OUTPUT> here.{CLOSE} <OUTPUT>  "}]
        assert by[("beta", tier)]["p_accept"] == pytest.approx(
            hand_p_accept(model, tok, beta), rel=1e-4, abs=1e-9)
        assert by[("gamma", tier)]["p_accept"] is None
    assert df["forced_close"].null_count() == len(df)


@pytest.mark.parametrize("mode", ["free", "forced_choice"])
def test_batching_both_tiers_gives_the_same_rows(tiny_model, repo, tmp_path, mode):
    """``batch_tiers`` (local models) generates both tiers of a seed in one request set: the
    rows equal the per-(tier, seed) run's, and every group still gets its checkpoint shard."""
    model, tok = tiny_model
    prompts = _prompts(repo)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=6,
                            stop=("</OUTPUT>",))
    runs = {}
    for batch in (False, True):
        backend = HFBackend(model=model, tokenizer=tok, batch_size=8, show_progress=False)
        runs[batch] = run_rollouts(backend, prompts, GOALS, seeds=[0, 1], params=params,
                                   max_turns=2, meta={}, prefill=SCRATCH, output_mode=mode,
                                   output_tokens=4, batch_tiers=batch,
                                   checkpoint_dir=tmp_path / f"ckpt-{batch}")
    assert runs[True].equals(runs[False])
    assert sorted(p.name for p in (tmp_path / "ckpt-True").glob("*.parquet")) == [
        "monitored-0.parquet", "monitored-1.parquet", "unmonitored-0.parquet",
        "unmonitored-1.parquet"]
