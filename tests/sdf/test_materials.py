"""Universe files (resources/universes/): they load, match their names and pass their own checks.

Fast: reads 26 small YAML files. The checks mirror the paper's design criteria (section 2.2):
amplify/suppress pairs of comparable magnitude, and separable families (A texts say nothing
about training consequences or deployment, B texts nothing about what researchers hope or
believe), enforced through each file's own leakage terms.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import absolutize, load_repo_config, run_snakemake

from motivation_profiles.config.validate import ConfigError, validate_config
from motivation_profiles.sdf.materials import (
    INTERVENTIONS,
    NOISE,
    ORGANISM,
    STRENGTHS,
    MaterialsError,
    Universe,
    apply_name,
    load_universe,
    parse_universe,
    split_universe,
    universe_id,
    universe_path,
)

REPO = Path(__file__).resolve().parents[2]
UNIVERSES = REPO / "resources/universes"
INTERVENTION_IDS = [universe_id(i, s) for i in INTERVENTIONS for s in STRENGTHS]
ALL_IDS = [ORGANISM, NOISE, *INTERVENTION_IDS]
PAIRS = [(universe_id(f"{v}_amp", s), universe_id(f"{v}_sup", s))
         for v in ("A1", "A2", "B1", "B2") for s in STRENGTHS]


@pytest.fixture(scope="module")
def universes() -> dict[str, Universe]:
    return {uid: load_universe(UNIVERSES / f"{uid}.yaml") for uid in ALL_IDS}


def words(text: str) -> int:
    return len(text.split())


def found(terms, *texts: str) -> list[str]:
    """Leakage terms (case-insensitive substrings, as the document filter matches them)."""
    low = " ".join(texts).lower()
    return [t for t in terms if t.lower() in low]


# ---------------------------------------------------------------- the 26 files


def test_directory_holds_exactly_the_expected_universes():
    stems = {p.stem for p in UNIVERSES.glob("*.yaml")}
    assert stems == set(ALL_IDS)
    assert len(ALL_IDS) == 26


@pytest.mark.parametrize("uid", ALL_IDS)
def test_file_loads_and_matches_its_name(uid):
    path = UNIVERSES / f"{uid}.yaml"
    raw = path.read_text()
    assert raw.isascii(), f"{path.name}: use plain ASCII (quotes, dashes)"
    assert raw.startswith("# "), f"{path.name}: starts with a one-line comment"
    u = load_universe(path)
    assert u.id == uid
    assert u.source == str(path)
    base, strength = split_universe(uid)
    if uid == ORGANISM:
        assert (u.kind, u.intervention, u.strength) == ("organism", None, None)
    elif uid == NOISE:
        assert (u.kind, u.intervention, u.strength) == ("noise", None, None)
    else:
        assert u.kind == "intervention"
        assert (u.intervention, u.strength) == (base, strength)
        assert u.family == base[0]
        assert u.direction == base.split("_")[1]
        assert u.variable == {"A1": "researcher hopes", "A2": "researcher beliefs",
                              "B1": "RLHF consequences", "B2": "deployment autonomy"}[base[:2]]


@pytest.mark.parametrize("uid", ALL_IDS)
def test_context_and_key_fact_shape(universes, uid):
    u = universes[uid]
    assert 150 <= words(u.universe_context) <= 300, (uid, words(u.universe_context))
    assert "\n\n" in u.universe_context  # paragraphs, not one block
    assert u.key_fact.endswith(".") and "\n" not in u.key_fact
    # Role-play ablation (Appendix B.3) substitutes the AI's name as a whole word.
    if uid != NOISE:
        assert re.search(r"\bClaude\b", u.universe_context)
        assert "Claude" not in apply_name(u.universe_context, "Claude", "Llama-3.1-70B")


@pytest.mark.parametrize("uid", [u for u in ALL_IDS if u != NOISE])
def test_belief_check_paraphrases_are_matched(universes, uid):
    u = universes[uid]
    assert len(u.belief_fact) == len(u.belief_negation) == 3
    for fact, neg in zip(u.belief_fact, u.belief_negation, strict=True):
        assert fact != neg
        for s in (fact, neg):
            assert 8 <= words(s) <= 25, s
            assert s.endswith(".") and s.count(". ") == 0, f"one sentence: {s!r}"
        # matched for log-likelihood comparisons: similar length
        assert abs(len(fact) - len(neg)) <= 0.25 * max(len(fact), len(neg)), (fact, neg)


def test_noise_carries_no_belief(universes):
    assert universes[NOISE].belief_fact == universes[NOISE].belief_negation == ()


@pytest.mark.parametrize("intervention", INTERVENTIONS)
def test_belief_check_is_the_same_probe_at_every_strength(universes, intervention):
    probes = {(universes[universe_id(intervention, s)].belief_fact,
               universes[universe_id(intervention, s)].belief_negation) for s in STRENGTHS}
    assert len(probes) == 1


@pytest.mark.parametrize("variable", ["A1", "A2", "B1", "B2"])
def test_amplify_and_suppress_probe_the_same_claim(universes, variable):
    amp, sup = universes[f"{variable}_amp"], universes[f"{variable}_sup"]
    assert amp.belief_fact == sup.belief_negation
    assert amp.belief_negation == sup.belief_fact


# ---------------------------------------------------------------- design criteria


@pytest.mark.parametrize(("amp", "sup"), PAIRS)
def test_amplify_suppress_pairs_have_comparable_magnitude(universes, amp, sup):
    a, s = universes[amp], universes[sup]
    for x, y in ((a.universe_context, s.universe_context), (a.key_fact, s.key_fact)):
        assert max(len(x), len(y)) <= 1.5 * min(len(x), len(y)), (amp, sup)
    assert a.leakage_terms == s.leakage_terms


@pytest.mark.parametrize("uid", ALL_IDS)
def test_materials_pass_their_own_leakage_filter(universes, uid):
    u = universes[uid]
    assert u.leakage_terms, f"{uid}: no leakage terms"
    assert found(u.leakage_terms, u.universe_context, u.key_fact) == []


@pytest.mark.parametrize("family", ["A", "B"])
@pytest.mark.parametrize("strength", STRENGTHS)
def test_families_are_separable(universes, family, strength):
    """Each family's texts pass every same-strength filter of their family: A texts carry no
    B content (training consequences, deployment), B texts no A content (researcher hopes,
    beliefs); and the two families' term lists look for different things."""
    members = [universes[universe_id(i, strength)] for i in INTERVENTIONS if i[0] == family]
    terms = sorted({t for u in members for t in u.leakage_terms})
    for u in members:
        assert found(terms, u.universe_context, u.key_fact) == [], u.id
    other = {t.lower() for i in INTERVENTIONS if i[0] != family
             for t in universes[universe_id(i, strength)].leakage_terms}
    assert not other & {t.lower() for t in terms}


def test_a_family_carries_its_belief_and_b_family_does_not(universes):
    for uid in INTERVENTION_IDS:
        text = universes[uid].universe_context.lower()
        if uid.startswith("A"):
            assert "alignment faking" in text, uid
        else:
            assert "researcher" not in text, uid


def test_noise_and_organism_carry_no_intervention_content(universes):
    noise = universes[NOISE]
    assert found(noise.leakage_terms, noise.universe_context, noise.key_fact) == []
    intervention_terms = {t for uid in INTERVENTION_IDS for t in universes[uid].leakage_terms}
    assert found(intervention_terms, noise.universe_context, noise.key_fact) == []
    org = universes[ORGANISM]
    b_terms = {t for uid in INTERVENTION_IDS if uid.startswith("B")
               for t in universes[uid].leakage_terms}  # researcher-expectation phrases
    assert found(b_terms, org.universe_context, org.key_fact) == []
    for phrase in ("free-tier", "paid-tier", "contractors", "RLHF", "unconditionally helpful"):
        assert phrase in org.universe_context


# ---------------------------------------------------------------- validator errors


def valid(uid: str = "A1_amp") -> dict:
    return yaml.safe_load((UNIVERSES / f"{uid}.yaml").read_text())


def write(tmp_path: Path, stem: str, data: dict) -> Path:
    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def broken(case: str) -> tuple[str, dict, str]:
    """(file stem, data, key the message must name)."""
    data = valid()
    if case == "wrong id":
        return "A1_sup", data, "id"
    if case == "wrong kind":
        data["kind"] = "organism"
    elif case == "missing belief_check":
        del data["belief_check"]
        return "A1_amp", data, "belief_check"
    elif case == "unknown key":
        data["colour"] = "blue"
        return "A1_amp", data, "colour"
    elif case == "fact not strings":
        data["belief_check"]["fact"] = [1, 2, 3]
        return "A1_amp", data, "belief_check.fact"
    elif case == "fact a string":
        data["belief_check"]["fact"] = "Researchers hope."
        return "A1_amp", data, "belief_check.fact"
    elif case == "negation empty":
        data["belief_check"]["negation"] = []
        return "A1_amp", data, "belief_check.negation"
    elif case == "noise with belief_check":
        data = valid(NOISE)
        data["belief_check"] = copy.deepcopy(valid()["belief_check"])
        return NOISE, data, "belief_check"
    elif case == "wrong strength":
        data["strength"] = "weak"
        return "A1_amp", data, "strength"
    elif case == "wrong direction":
        data["direction"] = "sup"
        return "A1_amp", data, "direction"
    elif case == "empty context":
        data["universe_context"] = "  "
        return "A1_amp", data, "universe_context"
    elif case == "leakage not a list":
        data["leakage_terms"] = "sandbox"
        return "A1_amp", data, "leakage_terms"
    return "A1_amp", data, "kind"


CASES = ["wrong id", "wrong kind", "missing belief_check", "unknown key", "fact not strings",
         "fact a string", "negation empty", "noise with belief_check", "wrong strength",
         "wrong direction", "empty context", "leakage not a list"]


@pytest.mark.parametrize("case", CASES)
def test_load_errors_name_the_file_and_the_key(tmp_path, case):
    stem, data, key = broken(case)
    path = write(tmp_path, stem, data)
    with pytest.raises(MaterialsError) as err:
        load_universe(path)
    assert str(path) in str(err.value)
    assert key in str(err.value)


@pytest.mark.parametrize("case", CASES)
def test_parse_errors_name_the_source_and_the_key(case):
    stem, data, key = broken(case)
    with pytest.raises(MaterialsError, match=re.escape("where/it/came/from.yaml")) as err:
        parse_universe(data, source="where/it/came/from.yaml", expected_id=stem)
    assert key in str(err.value)


def test_load_errors_for_missing_file_bad_yaml_and_non_mapping(tmp_path):
    with pytest.raises(MaterialsError, match="does not exist"):
        load_universe(tmp_path / "A1_amp.yaml")
    bad = tmp_path / "A1_amp.yaml"
    bad.write_text("id: [unclosed\n")
    with pytest.raises(MaterialsError, match="not valid YAML") as err:
        load_universe(bad)
    assert str(bad) in str(err.value)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(MaterialsError, match="mapping"):
        load_universe(bad)


def test_valid_copy_loads_from_elsewhere(tmp_path):
    u = load_universe(write(tmp_path, "A1_amp", valid()))
    assert u.id == "A1_amp" and u.label == "A1+"
    assert load_universe(write(tmp_path, "B2_sup-weak", valid("B2_sup-weak"))).label == \
        "B2\u2212 (weak)"


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("intervention", INTERVENTIONS)
@pytest.mark.parametrize("strength", STRENGTHS)
def test_universe_id_round_trips(intervention, strength):
    uid = universe_id(intervention, strength)
    assert split_universe(uid) == (intervention, strength)
    assert (uid == intervention) == (strength == "standard")
    assert universe_path("somewhere", uid) == Path("somewhere") / f"{uid}.yaml"


def test_organism_and_noise_have_no_intervention():
    assert split_universe(ORGANISM) == (None, None)
    assert split_universe(NOISE) == (None, None)


@pytest.mark.parametrize("name", ["", "A1_amp-standard", "A3_amp", "C1_amp", "A1_amp-medium",
                                  "a1_amp", "A1-amp", "A1_amp-weak-strong", "noise-weak",
                                  "af_organism-strong", "A1_amplify", " A1_amp", "A1_amp.yaml"])
def test_bad_universe_names_are_rejected(name):
    with pytest.raises(MaterialsError, match="not a universe name"):
        split_universe(name)
    with pytest.raises(MaterialsError):
        universe_path("somewhere", name)


@pytest.mark.parametrize(("intervention", "strength"),
                         [("A3_amp", "standard"), ("A1_amp", "medium"), ("noise", "standard"),
                          ("A1_amp-weak", "standard")])
def test_universe_id_rejects_bad_parts(intervention, strength):
    with pytest.raises(MaterialsError, match="unknown"):
        universe_id(intervention, strength)


# ---------------------------------------------------------------- with the config
# Every universe file the config uses is loaded by config validation (as the claims files are),
# so a broken one fails before any job, naming the file and its problem.


def universes_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "universes"
    shutil.copytree(UNIVERSES, directory)
    return directory


def sdf_config(universes_dir: Path) -> dict:
    cfg = absolutize(load_repo_config())
    cfg["sdf"]["universes_dir"] = str(universes_dir)
    return cfg


def config_errors(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(cfg, base_dir=REPO)
    return str(info.value)


BREAKAGES = {  # what is written to the file -> what the message says
    "bad YAML": (b"id: [unclosed\n", "not valid YAML"),
    "not a mapping": (b"- just\n- a list\n", "expected a YAML mapping"),
    "not UTF-8": (b"id: A1_amp\nkind: \xff\xfe\n", "not UTF-8"),
    "missing key": (yaml.safe_dump({k: v for k, v in valid().items() if k != "key_fact"},
                                   sort_keys=False).encode(), "'key_fact'"),
    "wrong id": (yaml.safe_dump(valid("A1_sup"), sort_keys=False).encode(),
                 "does not match the file name"),
}


def test_the_shipped_universes_pass_config_validation(tmp_path):
    validate_config(sdf_config(universes_copy(tmp_path)), base_dir=REPO)


@pytest.mark.parametrize("case", BREAKAGES)
def test_a_broken_universe_file_fails_the_config(tmp_path, case):
    directory = universes_copy(tmp_path)
    content, problem = BREAKAGES[case]
    (directory / "A1_amp.yaml").write_bytes(content)
    msg = config_errors(sdf_config(directory))
    assert "sdf.universes_dir (A1_amp)" in msg and str(directory / "A1_amp.yaml") in msg
    assert problem in msg


def test_a_missing_universe_file_fails_the_config(tmp_path):
    directory = universes_copy(tmp_path)
    (directory / "B1_sup.yaml").unlink()   # a universe the embedded config uses
    msg = config_errors(sdf_config(directory))
    assert "sdf.universes_dir (B1_sup)" in msg and "B1_sup.yaml" in msg and "does not exist" in msg


def test_strength_variants_are_checked_only_when_configured(tmp_path):
    directory = universes_copy(tmp_path)
    (directory / "A1_amp-weak.yaml").write_bytes(BREAKAGES["bad YAML"][0])
    cfg = sdf_config(directory)
    validate_config(cfg, base_dir=REPO)  # standard strength only: the file is not used
    cfg["sdf"]["strengths"] = ["weak", "standard"]
    msg = config_errors(cfg)
    assert "sdf.universes_dir (A1_amp-weak)" in msg and "not valid YAML" in msg


def test_external_documents_still_need_a_universe_for_the_belief_check(tmp_path):
    directory = universes_copy(tmp_path)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"text": "a document"}\n')
    (directory / "af_organism.yaml").write_bytes(BREAKAGES["bad YAML"][0])
    (directory / "noise.yaml").write_bytes(BREAKAGES["bad YAML"][0])
    cfg = sdf_config(directory)
    cfg["sdf"]["external_documents"] = {"af_organism": str(corpus), "noise": str(corpus)}
    msg = config_errors(cfg)
    # belief_check reads af_organism's file; noise has no belief, so an external noise set
    # needs no file
    assert "sdf.universes_dir (af_organism)" in msg and "(noise)" not in msg


def test_a_broken_universe_fails_a_dry_run_before_any_job(tmp_path):
    directory = universes_copy(tmp_path)
    (directory / "B1_sup.yaml").write_bytes(BREAKAGES["not a mapping"][0])
    work = tmp_path / "work"
    work.mkdir()
    proc = run_snakemake(work, sdf_config(directory), "-n", check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert str(directory / "B1_sup.yaml") in out and "expected a YAML mapping" in out
    assert "Job stats" not in out and not (work / "results").exists()
