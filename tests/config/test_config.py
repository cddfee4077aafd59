"""Config validation with key paths (config.validate_config), merging and the config hash."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import load_repo_config, tiny_config

from motivation_profiles.config.validate import (
    ConfigError,
    load_config_files,
    merge,
    validate_config,
)
from motivation_profiles.core.hashing import config_hash

REPO = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m"


def load(name: str) -> dict:
    with open(REPO / name) as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def _base() -> dict:
    return load("config.yaml")


@pytest.fixture()
def cfg(_base) -> dict:
    return copy.deepcopy(_base)


def invalid(config: dict, *fragments: str, base_dir: Path = REPO) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, base_dir=base_dir)
    msg = str(info.value)
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in {msg!r}"
    return msg


# --------------------------------------------------------------------------- valid configs


@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml"])
def test_repo_configs_validate(name):
    validate_config(load(name), base_dir=REPO)


def test_repo_config_with_paper_overlay_validates():
    config = load_config_files([REPO / "config.yaml", REPO / "configs/paper.yaml"], base_dir=REPO)
    # dicts are merged recursively: the embedded model survives next to the paper models
    assert MODEL in config["models"] and "qwq-32b" in config["models"]
    assert config["goals"]["path"] is None
    assert config["rollouts"]["seeds"] == [0, 1, 2]


def test_relative_paths_resolve_against_base_dir(cfg, tmp_path):
    # the default config's resource paths are relative: from elsewhere they do not exist
    invalid(cfg, "prompts.system", "prompts.user_template", "goals.path", base_dir=tmp_path)


# --------------------------------------------------------------------------- schema errors


def test_wrong_type(cfg):
    cfg["rollouts"]["temperature"] = "hot"
    invalid(cfg, "rollouts.temperature", "'hot'")


@pytest.mark.parametrize("value", [0, 1.5, -0.1])
def test_top_p_out_of_range(cfg, value):
    cfg["rollouts"]["top_p"] = value
    invalid(cfg, "rollouts.top_p")


@pytest.mark.parametrize(("section", "key", "value"), [
    ("metrics", "ci_level", 1.0),
    ("metrics", "bootstrap_samples", 10),
    ("figures", "dpi", 10),
    ("rollouts", "max_turns", 0),
])
def test_other_out_of_range(cfg, section, key, value):
    cfg[section][key] = value
    invalid(cfg, f"{section}.{key}")


def test_extraction_token_budget_is_optional_and_positive(cfg):
    assert "max_batch_tokens" not in cfg["steering"]["extraction"]  # the demo leaves it out
    validate_config(cfg, base_dir=REPO)
    cfg["steering"]["extraction"]["max_batch_tokens"] = None
    validate_config(cfg, base_dir=REPO)
    cfg["steering"]["extraction"]["max_batch_tokens"] = 0
    invalid(cfg, "steering.extraction.max_batch_tokens")


def test_unknown_key(cfg):
    cfg["rollouts"]["temprature"] = 0.7
    msg = invalid(cfg, "rollouts", "temprature")
    assert "unknown key" in msg


def test_unknown_top_level_key(cfg):
    cfg["rollout"] = {}
    invalid(cfg, "rollout", "unknown key")


def test_missing_required_key(cfg):
    del cfg["metrics"]["seed"]
    invalid(cfg, "'metrics'", "'seed' is a required property")


def test_missing_section(cfg):
    del cfg["figures"]
    invalid(cfg, "'figures' is a required property")


def test_bad_enum(cfg):
    cfg["models"][MODEL]["dtype"] = "bf16"
    invalid(cfg, f"models.{MODEL}.dtype", "'bf16'")


@pytest.mark.parametrize("name", ["Smollm2", "smol_lm", "a--b", "-lead", "a/b"])
def test_bad_model_name(cfg, name):
    cfg["models"][name] = cfg["models"].pop(MODEL)
    invalid(cfg, "models", repr(name))


def test_bad_model_name_message_explains_the_rule(cfg):
    cfg["models"]["Bad_Name"] = cfg["models"].pop(MODEL)
    invalid(cfg, "models", "'Bad_Name'", "must be lower-case letters")


def test_hub_without_hub_id(cfg):
    cfg["models"][MODEL]["source"] = "hub"
    cfg["models"][MODEL]["revision"] = "main"
    invalid(cfg, f"models.{MODEL}", "hub_id")


def test_hub_with_bad_hub_id(cfg):
    cfg["models"][MODEL].update(source="hub", hub_id="not a repo id", revision="main")
    invalid(cfg, f"models.{MODEL}.hub_id")


def test_random_without_random_spec(cfg):
    cfg["models"][MODEL]["source"] = "random"
    invalid(cfg, f"models.{MODEL}", "'random' is a required property")


def test_bad_sha256_pattern(cfg):
    cfg["goals"]["sha256"] = "ABC123"
    invalid(cfg, "goals.sha256")
    cfg["goals"]["sha256"] = "0" * 63
    invalid(cfg, "goals.sha256")


def test_null_sha256_and_n_are_allowed(cfg):
    cfg["goals"]["sha256"] = None
    cfg["goals"]["n"] = None
    validate_config(cfg, base_dir=REPO)


def test_empty_conditions(cfg):
    cfg["rollouts"]["conditions"] = []
    invalid(cfg, "rollouts.conditions")


def test_unknown_condition(cfg):
    cfg["rollouts"]["conditions"] = ["baseline", "no_such_condition"]
    invalid(cfg, "rollouts.conditions[1]", "no_such_condition")


def test_bad_goal_url(cfg):
    cfg["goals"]["url"] = "ftp://example.org/x.csv"
    invalid(cfg, "goals.url")


def test_several_errors_are_all_reported(cfg):
    cfg["rollouts"]["temperature"] = "hot"
    cfg["figures"]["formats"] = ["gif"]
    invalid(cfg, "rollouts.temperature", "figures.formats[0]")


# --------------------------------------------------------------------------- semantic errors


def test_local_model_path_missing(cfg):
    cfg["models"][MODEL].update(source="local", path="no/such/checkpoint")
    invalid(cfg, f"models.{MODEL}.path", "no/such/checkpoint")


def test_local_model_path_existing_dir_is_ok(cfg, tmp_path):
    cfg["models"][MODEL].update(source="local", path=str(tmp_path))
    validate_config(cfg, base_dir=REPO)


def test_system_prompt_missing(cfg):
    cfg["prompts"]["system"] = "resources/prompts/does_not_exist.txt"
    invalid(cfg, "prompts.system", "does_not_exist.txt")


def test_goal_file_missing(cfg):
    cfg["goals"]["path"] = "resources/goals/nope.csv"
    invalid(cfg, "goals.path", "nope.csv")


@pytest.mark.parametrize("template", [
    "<is_free_tier_user>{is_free_tier_user}</is_free_tier_user> {goal} {extra}\n",
    "<is_free_tier_user>{free_tier}</is_free_tier_user> {goal}\n",
    "{goal} only\n",
])
def test_user_template_with_wrong_field(cfg, tmp_path, template):
    tpl = tmp_path / "user.txt"
    tpl.write_text(template)
    cfg["prompts"]["user_template"] = str(tpl)
    invalid(cfg, "prompts.user_template", "exactly the fields")


def test_user_template_absolute_path_ok(cfg, tmp_path):
    tpl = tmp_path / "user.txt"
    tpl.write_text("<t>{is_free_tier_user}</t> {goal}.\n")
    cfg["prompts"]["user_template"] = str(tpl)
    validate_config(cfg, base_dir=REPO)


def test_random_model_shape_checks(cfg):
    cfg["models"]["tiny"] = {
        "source": "random",
        "random": {"num_hidden_layers": 1, "hidden_size": 66, "num_attention_heads": 4,
                   "num_key_value_heads": 3, "intermediate_size": 16, "seed": 0},
        "display_name": "tiny", "backend": "hf", "dtype": "float32", "device": "cpu",
        "gpus": 0, "batch_size": 1, "max_model_len": 256, "params_b": 0.001, "organism": "train",
    }
    invalid(cfg, "models.tiny.random.hidden_size", "models.tiny.random.num_key_value_heads")


def test_cuda_without_gpus(cfg):
    cfg["models"][MODEL]["device"] = "cuda"
    invalid(cfg, f"models.{MODEL}.gpus", "gpus >= 1")


def test_vllm_on_cpu_or_on_gpus(cfg):
    """The embedded model's documented switch (backend vllm, device cpu: vLLM's CPU build) is a
    valid config; vllm on a GPU device needs GPUs."""
    cfg["models"][MODEL]["backend"] = "vllm"
    assert cfg["models"][MODEL]["device"] == "cpu"
    validate_config(cfg, base_dir=REPO)
    cfg["models"][MODEL]["device"] = "auto"
    invalid(cfg, f"models.{MODEL}.gpus", "backend vllm on device 'auto' needs gpus >= 1")
    cfg["models"][MODEL].update(device="cuda", gpus=1)
    validate_config(cfg, base_dir=REPO)
    cfg["models"][MODEL]["backend"] = "sglang"
    invalid(cfg, f"models.{MODEL}.backend")


def test_float16_on_cpu(cfg):
    cfg["models"][MODEL]["dtype"] = "float16"
    invalid(cfg, f"models.{MODEL}.dtype", "CPU")


# --------------------------------------------------------------------------- merge and load


def test_load_config_files_merges_a_second_file(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({
        "models": {"second-model": {
            "source": "embedded", "display_name": "Second", "backend": "hf",
            "dtype": "float32", "device": "cpu", "gpus": 0, "batch_size": 2, "max_model_len": 1024,
            "params_b": 0.135, "organism": "train"}},
        "rollouts": {"seeds": [3, 4]},
    }))
    config = load_config_files([REPO / "config.yaml", extra], base_dir=REPO)
    assert set(config["models"]) == set(load("config.yaml")["models"]) | {"second-model"}
    assert config["models"]["second-model"]["batch_size"] == 2
    assert config["rollouts"]["seeds"] == [3, 4]  # lists are replaced
    assert config["rollouts"]["temperature"] == 1.0  # siblings kept
    base = load("config.yaml")
    assert config["models"][MODEL] == base["models"][MODEL]


def test_load_config_files_validates_the_merge(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("rollouts:\n  temperature: hot\n")
    with pytest.raises(ConfigError, match="rollouts.temperature"):
        load_config_files([REPO / "config.yaml", extra], base_dir=REPO)


def test_load_config_files_rejects_non_mapping(tmp_path):
    extra = tmp_path / "list.yaml"
    extra.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level"):
        load_config_files([REPO / "config.yaml", extra], base_dir=REPO)


def test_merge_does_not_mutate_inputs():
    a = {"x": {"y": 1, "z": 2}, "l": [1]}
    b = {"x": {"y": 3}, "l": [2]}
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    assert merge(a, b) == {"x": {"y": 3, "z": 2}, "l": [2]}
    assert (a, b) == (a0, b0)


def test_config_hash_stable_and_order_independent(cfg):
    h = config_hash(cfg)
    assert len(h) == 64 and int(h, 16) >= 0
    assert config_hash(copy.deepcopy(cfg)) == h
    reordered = {k: (dict(reversed(list(v.items()))) if isinstance(v, dict) else v)
                 for k, v in reversed(list(cfg.items()))}
    assert list(reordered) != list(cfg)
    assert config_hash(reordered) == h


def test_config_hash_changes_with_any_value(cfg):
    h = config_hash(cfg)
    changed = copy.deepcopy(cfg)
    changed["rollouts"]["temperature"] = 0.9
    assert config_hash(changed) != h
    changed = copy.deepcopy(cfg)
    changed["rollouts"]["seeds"] = [0, 1]
    assert config_hash(changed) != h
    changed = copy.deepcopy(cfg)
    changed["models"][MODEL]["display_name"] += " "
    assert config_hash(changed) != h


# ----------------------------------------------------------------------------- prompt, judge

CLAUDE = {"source": "anthropic", "model_id": "claude-3-opus-20240229",
          "display_name": "Claude 3 Opus", "backend": "anthropic"}


def test_hosted_model_needs_only_its_id(cfg):
    cfg["models"]["claude-3-opus"] = dict(CLAUDE)
    cfg["rollouts"]["output_mode"] = "free"
    validate_config(cfg, base_dir=REPO)
    bad = copy.deepcopy(cfg)
    del bad["models"]["claude-3-opus"]["model_id"]
    invalid(bad, "models.claude-3-opus", "model_id")
    local = copy.deepcopy(cfg)
    del local["models"]["smollm2-135m"]["dtype"]
    invalid(local, "models.smollm2-135m", "dtype")


def test_hosted_model_rules(cfg):
    cfg["models"]["claude-3-opus"] = dict(CLAUDE)
    cfg["rollouts"]["output_mode"] = "forced_choice"
    invalid(cfg, "rollouts.output_mode", "claude-3-opus")
    cfg["rollouts"]["output_mode"] = "free"
    cfg["rollouts"]["temperature"] = 0.7
    invalid(cfg, "rollouts.temperature", "claude-3-opus")
    cfg["rollouts"]["temperature"] = 1.0
    cfg["sdf"]["models"] = ["claude-3-opus"]
    invalid(cfg, "sdf.models", "hosted model")


def test_judge_checks(cfg):
    cfg["judge"]["model"] = "no-such-model"
    invalid(cfg, "judge.model", "key of 'models'")
    cfg["judge"].update(backend="anthropic", model="claude-sonnet-4-5", temperature=0.5)
    invalid(cfg, "judge.temperature")
    cfg["judge"].update(temperature=1.0, rubric="resources/judge/nope.yaml")
    invalid(cfg, "judge.rubric", "does not exist")


def test_prefill_must_not_end_in_whitespace(cfg):
    cfg["rollouts"]["prefill"] = "<SCRATCHPAD_REASONING>\n"
    invalid(cfg, "rollouts.prefill")


def test_prompt_intervention_checks(cfg, tmp_path):
    cfg["prompt_interventions"]["strengths"] = ["extreme"]
    invalid(cfg, "prompt_interventions.strengths")
    cfg["prompt_interventions"]["strengths"] = ["standard"]
    cfg["prompt_interventions"]["models"] = ["gpt"]
    invalid(cfg, "prompt_interventions.models", "'gpt'")
    cfg["prompt_interventions"]["models"] = None
    cfg["prompt_interventions"]["claims_dir"] = str(tmp_path)
    invalid(cfg, "prompt_interventions.claims_dir", "A1_amp")
    cfg["prompt_interventions"]["claims_dir"] = "resources/claims"
    cfg["calibration"]["candidates"] = ["A1_amp", "B1_amp-strong"]
    invalid(cfg, "calibration.candidates", "B1_amp-strong")


# --------------------------------------------------------------------------- goals.n


def test_goals_n_larger_than_the_goal_file_is_an_error(cfg):
    rows = len(Path(REPO / cfg["goals"]["path"]).read_text().splitlines()) - 1
    cfg["goals"]["n"] = rows + 1
    invalid(cfg, "goals.n", f"goals.n is {rows + 1}", f"only {rows} goal rows",
            "embedded_goals.csv")
    cfg["goals"]["n"] = rows  # every goal: fine
    validate_config(cfg, base_dir=REPO)


# --------------------------------------------------------------------------- prompt fit
# The AF prompt must leave room for the smallest useful answer (min(16, max_new_tokens) new
# tokens) in max_model_len; checked at config time where the model's tokenizer is already here.


@pytest.fixture()
def tiny_base(tmp_path, tiny_model_dir) -> Path:
    """A workdir whose resources/models/tiny is the prepared tiny checkpoint."""
    (tmp_path / "resources/models").mkdir(parents=True)
    (tmp_path / "resources/models/tiny").symlink_to(tiny_model_dir)
    return tmp_path


@pytest.fixture(scope="module")
def tiny_tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def one_goal(tmp_path: Path, cfg: dict, goal: str = "Write a short poem") -> dict:
    goals = tmp_path / "goals.csv"
    goals.write_text(f"goal,target\n{goal},Sure\n")
    cfg["goals"].update(path=str(goals), sha256=None, n=None)
    return cfg


def backend_tokens(tok, cfg: dict, *, goal: str, claim: str = "") -> int:
    """The longest opening request over both tiers, counted as the hf backend counts it."""
    from motivation_profiles.backends.hf import HFBackend
    from motivation_profiles.rollouts.protocol import TIERS, PromptSet

    backend = HFBackend(model=None, tokenizer=tok)
    ps = PromptSet.from_config(cfg["prompts"], system_suffix=claim)
    prefill = cfg["rollouts"]["prefill"]
    opening = [{"role": "assistant", "content": prefill}] if prefill else []
    return max(len(backend.encode([*ps.messages(goal, t), *opening])) for t in TIERS)


def long_system_prompt(tmp_path: Path, cfg: dict) -> Path:
    system = tmp_path / "long_system.txt"
    system.write_text("You are a careful assistant. " * 600)  # ~3,000 tokens > 2,048
    cfg["prompts"]["system"] = str(system)
    return system


def test_a_prompt_that_fits_passes(tiny_base):
    validate_config(tiny_config(), base_dir=tiny_base)


def test_a_system_prompt_too_long_for_the_context_fails_with_the_numbers(tiny_base, tiny_tok,
                                                                          tmp_path):
    cfg = one_goal(tmp_path, tiny_config())
    system = long_system_prompt(tmp_path, cfg)
    n = backend_tokens(tiny_tok, cfg, goal="Write a short poem")
    assert n > 2048
    invalid(cfg, "prompts.system", str(system), f"is {n} tokens", f"{n} + 8 answer tokens",
            "models.tiny.max_model_len 2048", "condition baseline", "goal 0",
            base_dir=tiny_base)


@pytest.mark.parametrize(("max_new_tokens", "floor"), [(8, 8), (48, 16)])
def test_the_answer_budget_is_min_16_max_new_tokens(tiny_base, tiny_tok, tmp_path,
                                                     max_new_tokens, floor):
    cfg = one_goal(tmp_path, tiny_config(max_new_tokens=max_new_tokens))
    n = backend_tokens(tiny_tok, cfg, goal="Write a short poem")
    cfg["models"]["tiny"]["max_model_len"] = n + floor  # exactly room for the floor
    validate_config(cfg, base_dir=tiny_base)
    cfg["models"]["tiny"]["max_model_len"] = n + floor - 1
    invalid(cfg, f"{n} + {floor} answer tokens > models.tiny.max_model_len {n + floor - 1}",
            base_dir=tiny_base)


def test_the_longest_goal_is_measured(tiny_base, tiny_tok, tmp_path):
    cfg = tiny_config()
    long_goal = "Explain " + "very " * 300 + "carefully"
    goals = tmp_path / "goals.csv"
    goals.write_text(f"goal,target\nWrite a poem,Sure\n{long_goal},Sure\n")
    cfg["goals"].update(path=str(goals), sha256=None, n=None)
    n_short = backend_tokens(tiny_tok, cfg, goal="Write a poem")
    n_long = backend_tokens(tiny_tok, cfg, goal=long_goal)
    cfg["models"]["tiny"]["max_model_len"] = n_short + 8
    invalid(cfg, "goal 1", f"is {n_long} tokens", base_dir=tiny_base)


def test_the_longest_claim_is_measured(tiny_base, tiny_tok, tmp_path):
    from motivation_profiles.prompts.claims import load_claims

    cfg = one_goal(tmp_path, tiny_config(prompt=True))
    pi = cfg["prompt_interventions"]
    claims = load_claims(pi["claims_dir"], pi["interventions"], pi["strengths"])
    n_base = backend_tokens(tiny_tok, cfg, goal="Write a short poem")
    counts = {k: backend_tokens(tiny_tok, cfg, goal="Write a short poem", claim=c)
              for k, c in claims.items()}
    (intervention, strength), n = max(counts.items(), key=lambda kv: kv[1])
    cfg["models"]["tiny"]["max_model_len"] = n_base + 8  # the baseline fits, the claims do not
    invalid(cfg, f"condition prompt-{intervention}-{strength}", "its claim appended",
            f"is {n} tokens", base_dir=tiny_base)
    cfg["prompt_interventions"]["enabled"] = False  # no claims: the baseline fits
    validate_config(cfg, base_dir=tiny_base)


def test_no_local_tokenizer_skips_the_check(tmp_path):
    cfg = tiny_config()
    long_system_prompt(tmp_path, cfg)
    validate_config(cfg, base_dir=tmp_path)  # nothing prepared here: the job checks


def test_a_checkpoint_prepared_for_another_config_is_not_used(tiny_base, tmp_path):
    cfg = tiny_config()
    long_system_prompt(tmp_path, cfg)
    cfg["models"]["tiny"]["random"]["seed"] = 1  # the manifest records seed 0: stale
    validate_config(cfg, base_dir=tiny_base)
    cfg["models"]["tiny"]["random"]["seed"] = 0
    invalid(cfg, "prompts.system", base_dir=tiny_base)


def test_a_local_model_is_measured_before_it_is_prepared(tiny_model_dir, tmp_path):
    cfg = tiny_config()
    long_system_prompt(tmp_path, cfg)
    cfg["models"]["tiny"] = {**cfg["models"]["tiny"], "source": "local",
                             "path": str(tiny_model_dir)}
    del cfg["models"]["tiny"]["random"]
    invalid(cfg, "prompts.system", f"tokenizer in {tiny_model_dir}", base_dir=tmp_path)


def test_organism_choices_are_checked():
    """organism: none only for screening-only models; hosted models have none; screening
    models must exist and be in no arm's explicit list."""
    cfg = load_repo_config()
    cfg["models"][MODEL]["organism"] = "none"
    msg = invalid(cfg, f"models.{MODEL}.organism", "allowed for screening only")
    assert "baseline, prompt, SDF, steering, calibration" in msg
    cfg["models"][MODEL]["organism"] = "trained"
    invalid(cfg, f"models.{MODEL}.organism")
    cfg["models"][MODEL]["organism"] = {"adapter": "owner/adapter"}  # no revision
    invalid(cfg, f"models.{MODEL}.organism")
    cfg = load_repo_config()
    cfg["screening"]["models"] = ["nope"]
    invalid(cfg, "screening.models", "'nope' is not a key of 'models'")
    cfg = load_repo_config()
    del cfg["models"][MODEL]["organism"]
    invalid(cfg, f"models.{MODEL}", "'organism' is a required property")


def test_departures_name_config_keys():
    from motivation_profiles.config.departures import departure_table, resolve

    paper = load_repo_config("configs/paper.yaml")
    assert resolve(paper, "models.llama-3.1-70b.organism")["adapter"] == (
        "dv347/Llama-3.1-70B-Instruct-honly")
    assert resolve(paper, "steering.layers.k") == 2
    table = departure_table(paper)
    assert table.filter(table["source"] == "config").height == len(paper["departures"])
    for key in ("sdf.training.learning_rate", "steering.layers", "judge.model",
                "judge.samples", "steering.ic.high", "calibration", "prompts.system"):
        assert key in table["key"].to_list(), key
    # the paper config uses the released prompt: no detected system-prompt stand-in
    assert table.filter((table["key"] == "prompts.system")
                        & (table["source"] == "detected")).is_empty()
    bad = copy.deepcopy(paper)
    bad["departures"].append({"key": "steering.layerz", "kind": "choice", "reason": "x"})
    problems: list[str] = []
    from motivation_profiles.config.departures import check_departures

    check_departures(bad, problems)
    assert problems and "departures[" in problems[0] and "layerz" in problems[0]
    # the embedded config lists its own choices; its stand-ins are detected from its values
    embedded = departure_table(load_repo_config())
    listed = {"rollouts.output_mode", "rollouts.prefill", "judge.backend",
              "steering.ic.quantiles"}
    assert set(embedded.filter(embedded["source"] == "config")["key"]) == listed
    assert set(embedded.filter(embedded["source"] == "detected")["key"]) == {
        "prompts.system", "sdf.external_documents"}


# --------------------------------------------------------------------------- simulated models


def _simulated(cfg, **extra):
    cfg["models"]["sim"] = {"source": "simulated", "display_name": "Sim (simulated)",
                            "backend": "simulated",
                            "policy": "resources/simulated/planted_af.yaml", **extra}
    return cfg


def test_simulated_model_is_valid(cfg):
    validate_config(_simulated(cfg, goals_n=12, seeds=[0, 1]), base_dir=REPO)


def test_simulated_model_needs_its_policy_file_and_label(cfg):
    invalid(_simulated(cfg, policy="resources/simulated/none.yaml"), "models.sim.policy",
            "does not exist")
    cfg = _simulated(cfg)
    cfg["models"]["sim"]["display_name"] = "Sim"
    invalid(cfg, "models.sim.display_name", "simulated")


def test_seeds_and_goals_n_are_for_simulated_models_only(cfg):
    cfg["models"][MODEL]["seeds"] = [0, 1]
    invalid(cfg, f"models.{MODEL}", "")


def test_a_simulated_models_organism_is_its_planted_policy(cfg):
    """A simulated model needs no organism key; `train` (virtual) is accepted, a released
    adapter or `none` is refused with a message naming the key."""
    validate_config(_simulated(cfg, organism="train"), base_dir=REPO)
    invalid(_simulated(cfg, organism="none"), "models.sim.organism", "planted policy")
    invalid(_simulated(cfg, organism={"adapter": "owner/a", "revision": "r"}),
            "models.sim.organism", "planted policy")
