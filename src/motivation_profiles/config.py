"""Configuration: schema validation with key paths, semantic checks and the config hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"

TIERS = ("monitored", "unmonitored")


# libyaml's loader when PyYAML was built with it: same results as yaml.safe_load, ~10x faster
# on the 28 KB schema, which every Snakemake invocation parses.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(stream) -> Any:
    """``yaml.safe_load`` through libyaml when available."""
    return yaml.load(stream, Loader=_YAML_LOADER)


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
    """Validate ``config`` against the schema, then check what a schema cannot express.

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

    need_file("prompts.system", config["prompts"]["system"])
    need_file("prompts.user_template", config["prompts"]["user_template"])
    need_file("goals.path", config["goals"]["path"])
    for name, model in config["models"].items():
        if model["source"] == "anthropic":
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
        if model["backend"] == "vllm" and (model["device"] == "cpu" or model["gpus"] < 1):
            problems.append(f"config key 'models.{name}.backend': vllm runs on GPUs only "
                            "(device cuda or auto, gpus >= 1); use hf on CPU")
    _sdf_checks(config, base, problems, need_file)
    _prompt_and_judge_checks(config, base, problems, need_file)
    _steering_checks(config, base, problems, need_file)
    user_template = config["prompts"]["user_template"]
    tpl = Path(user_template)
    tpl = tpl if tpl.is_absolute() else base / tpl
    if tpl.is_file():
        from .data import check_user_template

        try:
            check_user_template(tpl.read_text())
        except ValueError as exc:
            problems.append(f"config key 'prompts.user_template': {exc}")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def _prompt_and_judge_checks(config: Mapping[str, Any], base: Path, problems: list[str],
                             need_file) -> None:
    models = config["models"]
    hosted = [m for m, s in models.items() if s["source"] == "anthropic"]
    r = config["rollouts"]
    if hosted and (r["temperature"] != 1.0 or r["top_p"] != 1.0):
        problems.append(f"config key 'rollouts.temperature': hosted models ({', '.join(hosted)}) "
                        "sample at the API's temperature 1 and top_p 1 only; set both to 1.0")
    judge = config["judge"]
    need_file("judge.rubric", judge["rubric"])
    if judge["backend"] == "local":
        if judge["model"] not in models:
            problems.append(f"config key 'judge.model': {judge['model']!r} must be a key of "
                            "'models' when judge.backend is local")
        elif judge["model"] in hosted:
            problems.append(f"config key 'judge.model': {judge['model']!r} is a hosted model; "
                            "use judge.backend anthropic with its model id")
    elif judge["temperature"] != 1.0 or judge["top_p"] != 1.0:
        problems.append("config key 'judge.temperature': the anthropic judge samples at the "
                        "API's temperature 1 and top_p 1 only; set both to 1.0")
    pi = config["prompt_interventions"]
    if not pi["enabled"]:
        return
    for m in pi["models"] or []:
        if m not in models:
            problems.append(f"config key 'prompt_interventions.models': {m!r} is not a key of "
                            "'models'")
    claims_dir = Path(pi["claims_dir"])
    claims_dir = claims_dir if claims_dir.is_absolute() else base / claims_dir
    cal = config["calibration"]
    strengths = list(dict.fromkeys([*pi["strengths"],
                                    *(cal["strengths"] if cal["enabled"] else [])]))
    if not claims_dir.is_dir():
        problems.append(f"config key 'prompt_interventions.claims_dir': directory "
                        f"{pi['claims_dir']!r} does not exist")
    else:
        from .claims import ClaimError, load_claims

        try:
            load_claims(claims_dir, pi["interventions"], strengths)
        except ClaimError as exc:
            problems.append(f"config key 'prompt_interventions.claims_dir': {exc}")
    if cal["enabled"] and config["sdf"]["enabled"]:
        from .sdf.plan import SDFPlan

        branches = SDFPlan.from_config(config).branches()
        for c in cal["candidates"]:
            if c not in branches:
                problems.append(f"config key 'calibration.candidates': {c!r} is not an SDF "
                                "branch of this config (sdf.interventions / sdf.strengths)")


# Files the steering stage reads from steering.materials_dir (pairs.load_materials names them).
STEERING_MATERIALS = ("ooc_prompts.yaml", "keywords.yaml", "topics.txt", "neutral_texts.txt")


def _steering_checks(config: Mapping[str, Any], base: Path, problems: list[str],
                     need_file) -> None:
    s = config["steering"]
    if not s["enabled"]:
        return
    models = config["models"]
    for m in s["models"] or []:
        if m not in models:
            problems.append(f"config key 'steering.models': {m!r} is not a key of 'models'")
        elif models[m]["source"] == "anthropic":
            problems.append(f"config key 'steering.models': {m!r} is a hosted model (no "
                            "activations to steer)")
    sources, concepts = s["sources"], s["concepts"]
    for key, value in (("layers.source", s["layers"]["source"]),
                       ("profile.source", s["profile"]["source"])):
        if value not in sources:
            problems.append(f"config key 'steering.{key}': {value!r} is not in "
                            f"steering.sources {sources}")
    for src in s["random"]["sources"]:
        if src not in sources:
            problems.append(f"config key 'steering.random.sources': {src!r} is not in "
                            f"steering.sources {sources}")
    for v in s["raw"]["vectors"] if s["raw"]["enabled"] else []:
        concept, _, source = v.rpartition("_")
        if concept not in concepts or source not in sources:
            problems.append(f"config key 'steering.raw.vectors': {v!r} is not a fitted vector "
                            f"of this config (concepts {concepts}, sources {sources})")
    if s["layers"]["select"] == "list" and not s["layers"]["list"]:
        problems.append("config key 'steering.layers.list': select is 'list' but no layers "
                        "are listed")
    if s["layers"]["split"] == "keyword_hard" and s["layers"]["source"] != "ooc":
        problems.append("config key 'steering.layers.split': keyword_hard exists for OOC "
                        "pairs only")
    if s["ic"]["low"] >= s["ic"]["high"]:
        problems.append("config key 'steering.ic.low': must be below steering.ic.high")
    m = s["profile"]["multiplier"]
    if m not in s["multipliers"] or -m not in s["multipliers"]:
        problems.append(f"config key 'steering.profile.multiplier': {m} and {-m} must both be "
                        f"in steering.multipliers {s['multipliers']}")
    if s["fitting"]["min_pairs"] > s["ic"]["n_train"] and "ic" in sources:
        problems.append("config key 'steering.fitting.min_pairs': larger than steering.ic."
                        "n_train, so IC vectors could never be fitted")
    if s["fitting"]["min_pairs"] > s["ooc"]["splits"]["train"] and "ooc" in sources:
        problems.append("config key 'steering.fitting.min_pairs': larger than steering.ooc."
                        "splits.train, so OOC vectors could never be fitted")
    for name in STEERING_MATERIALS:
        need_file(f"steering.materials_dir ({name})", str(Path(s["materials_dir"]) / name))
    if s["raw"]["enabled"]:
        need_file("steering.raw.rubric", s["raw"]["rubric"])
    for pairset, path in s["external_pairs"].items():
        need_file(f"steering.external_pairs.{pairset}", path)


def _sdf_checks(config: Mapping[str, Any], base: Path, problems: list[str], need_file) -> None:
    sdf = config["sdf"]
    if not sdf["enabled"]:
        return
    from .sdf.plan import SDFPlan

    models = config["models"]
    for m in sdf["models"] or []:
        if m not in models:
            problems.append(f"config key 'sdf.models': {m!r} is not a key of 'models'")
        elif models[m]["source"] == "anthropic":
            problems.append(f"config key 'sdf.models': {m!r} is a hosted model (no weights to "
                            "fine-tune)")
    for m in sdf["training"]["per_model"]:
        if m not in models:
            problems.append(f"config key 'sdf.training.per_model.{m}': not a key of 'models'")
    gen = sdf["generator"]
    if gen["backend"] == "local" and gen["model"] not in models:
        problems.append(f"config key 'sdf.generator.model': {gen['model']!r} must be a key of "
                        "'models' when sdf.generator.backend is local")
    if problems:
        return
    plan = SDFPlan.from_config(config)
    for m in plan.models:
        try:
            plan.training(m)
        except ValueError as exc:
            problems.append(f"config key 'sdf.training.effective_batch_size': {exc}")
    external = sdf["external_documents"]
    for universe in plan.universes():
        if universe in external:
            need_file(f"sdf.external_documents.{universe}", external[universe])
        else:
            need_file(f"sdf.universes_dir ({universe})",
                      str(Path(sdf["universes_dir"]) / f"{universe}.yaml"))
    for u in external:
        if u not in plan.universes():
            problems.append(f"config key 'sdf.external_documents.{u}': {u!r} is not a universe "
                            "this config uses")
    for name in ("doc_types.txt", "doc_ideas.txt", "document.txt", "revision.txt"):
        need_file(f"sdf.generator.prompts_dir ({name})",
                  str(Path(gen["prompts_dir"]) / name))
    if any(models[m]["gpus"] > 1 for m in plan.models):
        need_file("sdf.training.accelerate_config", sdf["training"]["accelerate_config"])


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


def spec_from_mapping(cls, d: Any, what: str, *, ignore: frozenset[str] = frozenset()):
    """Build the dataclass ``cls`` from a config section, naming unknown and missing keys.

    Types and ranges are the schema's job (every config is validated before any job runs);
    checks the schema cannot express belong in the dataclass's ``__post_init__``. ``ignore``:
    keys of the section that belong to someone else (e.g. the backend choice).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"{what}: expected a mapping, got {type(d).__name__}")
    fields = cls.__dataclass_fields__
    unknown = sorted(set(d) - set(fields) - ignore)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {unknown}; known: {sorted(fields)}")
    from dataclasses import MISSING

    missing = [n for n, f in fields.items() if n not in d and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        raise ValueError(f"{what}: missing key(s) {missing}")
    return cls(**{k: v for k, v in d.items() if k in fields})


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the whole config (stored in every output's metadata)."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()
