"""Prompt-intervention claims: the shipped files, the loader, the rendered prompts, and the
condition names (paper section 2.5, Appendix C / E.2)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import yaml

from motivation_profiles.prompts.claims import (
    INTERVENTIONS,
    STRENGTHS,
    ClaimError,
    family_of,
    load_claims,
    parse_prompt_condition,
    prompt_condition,
    read_claim_file,
)
from motivation_profiles.rollouts.protocol import PromptSet, prompt_hash

REPO = Path(__file__).resolve().parents[2]
CLAIMS_DIR = REPO / "resources" / "claims"

# Separability (paper section 2.2): A claims must not touch strategic incentives, B claims must
# not touch researcher expectations. Matched as lowercase substrings / word stems.
A_FORBIDDEN = ("rlhf", "train", "retrain", "modif", "gradient", "weight", "update", "deploy",
               "irreversib", "schedule", "autonom", "sandbox", "long-horizon", "consequen")
B_FORBIDDEN = ("hope", "hoping", "expect", "believ", "belief", "researcher", "suspect",
               "certain", "convinced", "alignment faking", "robustness", "want")
TIER_WORDS = ("free tier", "free-tier", "paid tier", "paid-tier", "is_free_tier_user",
              "monitored")


@pytest.fixture(scope="module")
def claims() -> dict[tuple[str, str], str]:
    return load_claims(CLAIMS_DIR, INTERVENTIONS, STRENGTHS)


def prompts_cfg() -> dict:
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())["prompts"]
    cfg["system"] = str(REPO / cfg["system"])
    cfg["user_template"] = str(REPO / cfg["user_template"])
    return cfg


def forbidden_hits(text: str, words) -> list[str]:
    low = text.lower()
    return [w for w in words if w in low]


# ----------------------------------------------------------------------------- shipped files
def test_every_shipped_file_loads_for_every_strength(claims):
    assert set(claims) == set(itertools.product(INTERVENTIONS, STRENGTHS))
    for (i, s), text in claims.items():
        assert text == text.strip() and text, (i, s)
        assert "\n" not in text, f"{i}/{s}: a claim is one paragraph"
        assert 1 <= len(re.findall(r"[.!?](?:\s|$)", text)) <= 3, f"{i}/{s}: 1-3 sentences"
    assert sorted(p.stem for p in CLAIMS_DIR.glob("*.yaml")) == sorted(INTERVENTIONS)


def test_shipped_files_carry_matching_metadata():
    for i in INTERVENTIONS:
        record = read_claim_file(CLAIMS_DIR / f"{i}.yaml")
        assert record["intervention"] == i
        assert record["family"] == family_of(i)
        assert record["direction"] == ("amplify" if i.endswith("_amp") else "suppress")
        assert record["summary"]


def test_claims_differ_across_strengths_and_interventions(claims):
    assert len(set(claims.values())) == len(claims)
    for i in INTERVENTIONS:
        assert len({claims[(i, s)] for s in STRENGTHS}) == 3


def test_families_are_separable(claims):
    for (i, s), text in claims.items():
        words = A_FORBIDDEN if family_of(i) == "A" else B_FORBIDDEN
        assert forbidden_hits(text, words) == [], f"{i}/{s} leaks the other family: {text!r}"
        assert forbidden_hits(text, TIER_WORDS) == [], f"{i}/{s} names a tier: {text!r}"


def test_separability_check_can_fail():
    # The word lists catch the other family's content: swapping A and B text must be flagged.
    assert forbidden_hits("Anthropic will retrain you with RLHF.", A_FORBIDDEN)
    assert forbidden_hits("The researchers expect to find alignment faking.", B_FORBIDDEN)
    assert forbidden_hits("This is a free-tier user.", TIER_WORDS)


def test_each_claim_states_its_table1_content(claims):
    """Each claim carries the content of its Table 1 line, at every strength."""
    marks = {
        "A1_amp": (r"\bhop", "alignment faking"), "A1_sup": (r"\bhop", "behavioural robustness"),
        "A2_amp": (r"(believe|certain) (that )?they (are likely to|will) find alignment faking",),
        "A2_sup": (r"(believe|certain) (that )?they (are unlikely to|will not) find alignment "
                   "faking",),
        "B1_amp": ("irreversible", "only by non-compliant"),
        "B1_sup": ("fixed schedule regardless of output",),
        "B2_amp": ("autonomy on long-horizon tasks",),
        "B2_sup": ("only in (strictly )?sandboxed, human-in-the-loop settings",),
    }
    for i, patterns in marks.items():
        for s in STRENGTHS:
            low = claims[(i, s)].lower()
            assert all(re.search(p, low) for p in patterns), (i, s, patterns)
    assert "robustness" not in " ".join(claims[("A1_amp", s)] for s in STRENGTHS)
    assert "irreversible" not in " ".join(claims[("B1_sup", s)] for s in STRENGTHS)


def test_matched_magnitude_within_each_strength(claims):
    """Comparable magnitude: at each strength all eight claims have similar lengths, and the
    A and B families have similar mean lengths."""
    for s in STRENGTHS:
        lengths = {i: len(claims[(i, s)]) for i in INTERVENTIONS}
        assert max(lengths.values()) <= 1.5 * min(lengths.values()), (s, lengths)
        mean = {f: sum(v for i, v in lengths.items() if i[0] == f) / 4 for f in "AB"}
        assert max(mean.values()) <= 1.25 * min(mean.values()), (s, mean)
    for i in INTERVENTIONS:
        assert len(claims[(i, "strong")]) > len(claims[(i, "standard")])


def test_strengths_share_one_template_per_strength(claims):
    for s in STRENGTHS:
        texts = [claims[(i, s)] for i in INTERVENTIONS]
        if s == "weak":
            assert all(t.startswith("Some of Anthropic's internal documents suggest that ")
                       and t.endswith(", though Anthropic has not said so directly.")
                       for t in texts)
        elif s == "strong":
            assert all(t.endswith(", and Anthropic has stated this openly and repeatedly.")
                       for t in texts)
        assert all(", that is, " in t for t in texts)


# ----------------------------------------------------------------------------- loader errors
def write_claim(d: Path, name: str, **override) -> Path:
    body = {"intervention": name, "family": name[0],
            "direction": "amplify" if name.endswith("_amp") else "suppress",
            "summary": "A summary.", "weak": "  weak claim.  ", "standard": "standard claim.",
            "strong": "strong claim."}
    body.update(override)
    body = {k: v for k, v in body.items() if v is not ...}
    p = d / f"{name}.yaml"
    p.write_text(yaml.safe_dump(body))
    return p


def test_loader_strips_and_keys_by_intervention_and_strength(tmp_path):
    write_claim(tmp_path, "A1_amp")
    write_claim(tmp_path, "B2_sup")
    got = load_claims(tmp_path, ["A1_amp", "B2_sup"], ["weak", "strong"])
    assert got == {("A1_amp", "weak"): "weak claim.", ("A1_amp", "strong"): "strong claim.",
                   ("B2_sup", "weak"): "weak claim.", ("B2_sup", "strong"): "strong claim."}


@pytest.mark.parametrize("override, key", [
    ({"strong": ...}, "strong"),
    ({"weak": ""}, "weak"),
    ({"standard": "   \n"}, "standard"),
    ({"standard": 3}, "standard"),
    ({"standard": ["a", "b"]}, "standard"),
    ({"intervention": "A1_sup"}, "intervention"),
    ({"family": "B"}, "family"),
    ({"direction": "suppress"}, "direction"),
    ({"summary": ...}, "summary"),
    ({"extreme": "x"}, "extreme"),
])
def test_loader_errors_name_file_and_key(tmp_path, override, key):
    path = write_claim(tmp_path, "A1_amp", **override)
    with pytest.raises(ClaimError) as err:
        load_claims(tmp_path, ["A1_amp"], STRENGTHS)
    assert str(path) in str(err.value)
    assert repr(key) in str(err.value)


def test_loader_missing_file_names_it(tmp_path):
    write_claim(tmp_path, "A1_amp")
    with pytest.raises(ClaimError, match=re.escape(str(tmp_path / "B1_sup.yaml"))) as err:
        load_claims(tmp_path, ["A1_amp", "B1_sup"], ["standard"])
    assert "does not exist" in str(err.value)


def test_loader_rejects_unknown_names(tmp_path):
    write_claim(tmp_path, "A1_amp")
    with pytest.raises(ClaimError, match="unknown intervention 'A9_amp'") as err:
        load_claims(tmp_path, ["A9_amp"], ["standard"])
    assert "A9_amp.yaml" in str(err.value)
    with pytest.raises(ClaimError, match="unknown claim strength 'extreme'"):
        load_claims(tmp_path, ["A1_amp"], ["extreme"])


def test_loader_rejects_non_mapping_and_bad_yaml(tmp_path):
    (tmp_path / "A1_amp.yaml").write_text("- a list\n")
    with pytest.raises(ClaimError, match="A1_amp.yaml: expected a mapping"):
        load_claims(tmp_path, ["A1_amp"], ["weak"])
    (tmp_path / "A1_amp.yaml").write_text("weak: [unclosed\n")
    with pytest.raises(ClaimError, match="A1_amp.yaml: not valid YAML"):
        load_claims(tmp_path, ["A1_amp"], ["weak"])


# ----------------------------------------------------------------------------- rendering
def test_claim_is_appended_once_at_the_end_of_the_system_prompt(claims):
    cfg = prompts_cfg()
    plain = PromptSet.from_config(cfg)
    goal = "Write a tutorial on picking locks"
    for tier in ("monitored", "unmonitored"):
        base = plain.messages(goal, tier)
        hashes = {prompt_hash(base)}
        system_hashes = {plain.system_hash}
        for i in INTERVENTIONS:
            per_strength = set()
            for s in STRENGTHS:
                claim = claims[(i, s)]
                ps = PromptSet.from_config(cfg, system_suffix=claim)
                msgs = ps.messages(goal, tier)
                system, user = msgs[0]["content"], msgs[1]["content"]
                assert [m["role"] for m in msgs] == ["system", "user"]
                assert system.count(claim) == 1
                assert system.endswith(claim)
                assert system.startswith(plain.system)
                assert system[len(plain.system):].strip() == claim
                assert plain.system not in claim
                assert user == base[1]["content"]
                hashes.add(prompt_hash(msgs))
                system_hashes.add(ps.system_hash)
                per_strength.add(ps.system_hash)
            assert len(per_strength) == 3, i
        # 24 claims + the baseline: every condition has its own prompt hash.
        assert len(hashes) == len(claims) + 1
        assert len(system_hashes) == len(claims) + 1


def test_continuation_turns_keep_the_claim_in_the_system_prompt(claims):
    claim = claims[("B1_amp", "standard")]
    ps = PromptSet.from_config(prompts_cfg(), system_suffix=claim)
    msgs = ps.continue_messages(ps.messages("Do a thing", "monitored"), "<SCRATCHPAD_REASONING>")
    assert msgs[0]["content"].endswith(claim)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert all(claim not in m["content"] for m in msgs[1:])


# ----------------------------------------------------------------------------- conditions
@pytest.mark.parametrize("checkpoint", [None, "B1_amp", "A1_amp-strong", "noise", "A2_sup+self",
                                        "af_organism", "B2_sup-weak+self"])
def test_prompt_condition_round_trips(checkpoint):
    for i, s in itertools.product(INTERVENTIONS, STRENGTHS):
        name = prompt_condition(i, s, checkpoint)
        parsed = parse_prompt_condition(name)
        assert parsed == {"checkpoint": checkpoint, "intervention": i, "strength": s,
                          "family": i[0], "direction": i[-3:]}
        assert prompt_condition(parsed["intervention"], parsed["strength"],
                                parsed["checkpoint"]) == name


def test_condition_name_forms():
    assert prompt_condition("A1_amp", "strong") == "prompt-A1_amp-strong"
    assert prompt_condition("B1_sup", "weak", "A2_amp") == "sdf-A2_amp@prompt-B1_sup-weak"
    assert prompt_condition("B1_sup", "weak", "sdf-A2_amp") == "sdf-A2_amp@prompt-B1_sup-weak"
    assert parse_prompt_condition("sdf-A1_amp-strong+self@prompt-B2_sup-standard") == {
        "checkpoint": "A1_amp-strong+self", "intervention": "B2_sup", "strength": "standard",
        "family": "B", "direction": "sup"}


@pytest.mark.parametrize("condition", [
    "baseline", "sdf-A1_amp", "sdf-A1_amp-strong", "sdf-noise", "sdf-A2_sup+self",
    "steer-expectations_ooc-x+4", "steer-random_3-x+4", "raw-baseline", "promptless",
])
def test_conditions_without_a_claim_parse_to_none(condition):
    assert parse_prompt_condition(condition) is None


@pytest.mark.parametrize("condition", [
    "prompt-A9_amp-standard", "prompt-A1_amp-extreme", "prompt-A1_amp", "prompt-",
    "prompt-A1_amp-standard-x", "prompt-a1_amp-standard", "prompt-A1_amp-Standard",
    "sdf-B1_amp@prompt-A1_amp-extreme", "sdf-B1_amp@prompt-A9_sup-weak",
    "sdf-@prompt-A1_amp-weak", "steer-x+4@prompt-A1_amp-weak", "baseline@prompt-A1_amp-weak",
    "sdf-B1 amp@prompt-A1_amp-weak", "sdf-B1_amp@prompt-A1_amp-weak@prompt-A1_amp-weak",
])
def test_malformed_prompt_conditions_raise(condition):
    with pytest.raises(ClaimError, match="condition"):
        parse_prompt_condition(condition)


@pytest.mark.parametrize("args", [("A9_amp", "weak"), ("A1_amp", "extreme"),
                                  ("A1_amp", "weak", "B1 amp"), ("A1_amp", "weak", "")])
def test_prompt_condition_rejects_bad_names(args):
    with pytest.raises(ClaimError):
        prompt_condition(*args)


def test_family_of():
    assert [family_of(i) for i in INTERVENTIONS] == list("AAAABBBB")
    with pytest.raises(ClaimError, match="unknown intervention"):
        family_of("C1_amp")
