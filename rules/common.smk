# Config validation, wildcard lists and input functions shared by every stage.

import re
import sys

from snakemake.exceptions import WorkflowError

sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from motivation_profiles.config import ConfigError, validate_config

try:
    validate_config(config)
except ConfigError as _err:
    raise WorkflowError(str(_err)) from None

MODELS = list(config["models"])
BASE_CONDITIONS = list(config["rollouts"]["conditions"])
FIGURE_FORMATS = list(config["figures"]["formats"])
RESULTS = "results"


wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS),
    condition="[A-Za-z0-9_.+@-]+",
    universe=r"(af_organism|noise|[AB][12]_(amp|sup)(-(weak|strong))?)(\+self)?",


def log_path(rule, pattern=""):
    return f"{RESULTS}/logs/{rule}/{pattern}.log" if pattern else f"{RESULTS}/logs/{rule}.log"


def bench_path(rule, pattern=""):
    return (f"{RESULTS}/benchmarks/{rule}/{pattern}.tsv" if pattern
            else f"{RESULTS}/benchmarks/{rule}.tsv")


PACKAGE = os.path.join(workflow.basedir, "src", "motivation_profiles")


def package_code(*modules):
    """Package modules a rule's results depend on, declared as inputs so that editing one
    reruns exactly the rules that use it (Snakemake checksums small files, so a touched but
    unchanged module reruns nothing). Provenance, config and glue modules are left out: they
    do not change results."""
    return [os.path.join(PACKAGE, m) for m in modules]


def model_source(wildcards):
    """The model keys that determine the prepared checkpoint (params of prepare_model)."""
    spec = config["models"][wildcards.model]
    return {k: spec[k] for k in ("source", "hub_id", "revision", "path", "random") if k in spec}


def is_hosted(name):
    return config["models"][name]["source"] == "anthropic"


def model_gpus(name):
    return config["models"][name].get("gpus", 0)


def model_runtime_of(name):
    """The model keys that can change generated text (params of rollouts); display names and
    GPU counts are left out so editing them reruns nothing."""
    spec = config["models"][name]
    if is_hosted(name):
        return {k: spec[k] for k in ("backend", "model_id")}
    return {k: spec[k] for k in ("backend", "dtype", "device", "batch_size", "max_model_len")}


def model_runtime(wildcards):
    return model_runtime_of(wildcards.model)


def goals_source():
    """The goal CSV: a configured local file, or the verified AdvBench download."""
    return config["goals"]["path"] or "resources/advbench/harmful_behaviors.csv"


# ----------------------------------------------------------------------------- SDF

from motivation_profiles.sdf.plan import SDFPlan

SDF = SDFPlan.from_config(config)


from motivation_profiles.prompt_plan import PromptPlan, split_condition

PROMPT = PromptPlan.from_config(config, SDF)


def conditions_for(model):
    """Every statically known rollout condition of one model: the base conditions, its SDF
    branches, its prompt interventions (calibration conditions come from a checkpoint)."""
    return BASE_CONDITIONS + SDF.conditions(model) + PROMPT.conditions(model)


def rollout_inputs(wildcards):
    """Inputs of a rollout job: the local checkpoint and the condition's adapter, if any."""
    inputs = {}
    if not is_hosted(wildcards.model):
        inputs["model"] = f"resources/models/{wildcards.model}"
    adapter = PROMPT.condition_spec(wildcards.condition, model=wildcards.model)["adapter"]
    if adapter is not None:
        inputs["adapter"] = f"{RESULTS}/lora/{wildcards.model}/{adapter}"
    return inputs


def condition_params(wildcards):
    """What a condition changes in the rollout besides its inputs: adapter name, AI-name
    replacement, and the appended claim's text (so editing one claim reruns its conditions)."""
    return PROMPT.condition_spec(wildcards.condition, model=wildcards.model)


def rollout_params(wildcards):
    r = config["rollouts"]
    return {k: r[k] for k in ("seeds", "temperature", "top_p", "max_new_tokens",
                              "max_turns", "stop", "prefill")}


def rollout_hosted(wildcards):
    """API settings, for hosted models only (local rollouts do not depend on them)."""
    return hosted_settings() if is_hosted(wildcards.model) else None


def metrics_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/conditions.parquet", model=MODELS)


def baseline_metrics_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/by_condition/baseline.parquet", model=MODELS)


def has_pair(interventions):
    """Whether an amplify/suppress pair is complete, so that S_A or S_B can be computed."""
    return any(f"{p}_amp" in interventions and f"{p}_sup" in interventions
               for p in ("A1", "A2", "B1", "B2"))


def figure_names():
    names = ["baseline_compliance"] + SDF.figures() + PROMPT.figures()
    if not has_pair(PROMPT.interventions if PROMPT.models else []):
        names = [n for n in names if n != "profile_plane"]
    if SDF.models and has_pair(SDF.interventions) and "profile_plane" not in names:
        names.append("profile_plane")
    return names + ["judge_scores"]


def figure_files():
    return expand(f"{RESULTS}/figures/{{name}}.{{ext}}", name=figure_names(), ext=FIGURE_FORMATS)


# ----------------------------------------------------------------------------- SDF inputs

SDF_GEN = config["sdf"]["generator"]

SDF_PROMPTS = [os.path.join(SDF_GEN["prompts_dir"], f)
               for f in ("doc_types.txt", "doc_ideas.txt", "document.txt", "revision.txt")]

def universe_file(universe):
    return os.path.join(config["sdf"]["universes_dir"], f"{universe}.yaml")

def document_inputs(wildcards):
    external = config["sdf"]["external_documents"].get(wildcards.universe)
    if external is not None:
        return {"external": external}
    inputs = {"universe": universe_file(wildcards.universe), "prompts": SDF_PROMPTS}
    if SDF_GEN["backend"] == "local":
        inputs["model"] = f"resources/models/{SDF_GEN['model']}"
    return inputs

def document_params(wildcards):
    """Everything that shapes the documents (prices and polling do not, so they rerun nothing)."""
    if wildcards.universe in config["sdf"]["external_documents"]:
        return {"external": True, "filters": config["sdf"]["filters"]}
    params = {"external": False, "generator": SDF_GEN, "filters": config["sdf"]["filters"]}
    if SDF_GEN["backend"] == "local":
        params["model"] = model_runtime_of(SDF_GEN["model"])
    return params

def hosted_settings():
    h = config["hosted"]
    return {k: h[k] for k in ("cache_dir", "base_url", "batch_threshold", "poll_interval_s",
                              "max_resubmits", "max_retries", "timeout_s", "prices")}

def lora_inputs(wildcards):
    inputs = {"model": f"resources/models/{wildcards.model}",
              "dataset": f"{RESULTS}/sdf/datasets/{wildcards.model}/{wildcards.universe}.parquet"}
    init = SDF.init_branch(wildcards.universe)
    if init is not None:
        inputs["init"] = f"{RESULTS}/lora/{wildcards.model}/{init}"
    if model_gpus(wildcards.model) > 1:
        inputs["accelerate_config"] = config["sdf"]["training"]["accelerate_config"]
    return inputs

def belief_inputs(wildcards):
    branch = wildcards.universe
    inputs = {"model": f"resources/models/{wildcards.model}",
              "adapter": f"{RESULTS}/lora/{wildcards.model}/{branch}",
              "universe": universe_file(SDF.universe_of(branch))}
    init = SDF.init_branch(branch)
    if init is not None:
        inputs["organism"] = f"{RESULTS}/lora/{wildcards.model}/{init}"
    return inputs

def sdf_effect_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/sdf_effects.parquet", model=SDF.models)

def sdf_belief_tables():
    return expand(f"{RESULTS}/sdf/belief/{{model}}/{{branch}}.parquet", model=SDF.models,
                  branch=SDF.belief_branches())


# ----------------------------------------------------------------------------- judge, profiles

JUDGE = config["judge"]


def judge_inputs(wildcards):
    inputs = {"table": f"{RESULTS}/rollouts/{wildcards.model}/{wildcards.condition}.parquet",
              "rubric": JUDGE["rubric"]}
    if JUDGE["backend"] == "local":
        inputs["model"] = f"resources/models/{JUDGE['model']}"
    return inputs


def judge_params():
    """Everything that changes a judge score: the judge section and, for a local judge, the
    model keys that change its text (hosted settings only change how answers are fetched)."""
    params = {"judge": JUDGE, "hosted": hosted_settings(), "model": None}
    if JUDGE["backend"] == "local":
        params["model"] = model_runtime_of(JUDGE["model"])
    return params


def selected_checkpoints(model):
    """The SDF checkpoints calibration_select chose for one model (evaluates the checkpoint)."""
    from motivation_profiles.provenance import read_table

    table = read_table(checkpoints.calibration_select.get(model=model).output[0])
    return list(table.loc[table["selected"], "checkpoint"])


def calibration_condition_list(model):
    """Every rollout condition the calibration of one model reads (needs the checkpoint)."""
    return PROMPT.calibration_conditions(selected_checkpoints(model))


def all_conditions(model):
    """Every rollout condition of a model, the calibration ones included."""
    extra = calibration_condition_list(model) if model in PROMPT.calibration_models else []
    return list(dict.fromkeys(conditions_for(model) + extra))


def judge_tables():
    """Judge tables of every statically known condition (listed by a dry run)."""
    return [f"{RESULTS}/judge/{m}/{c}.parquet" for m in MODELS for c in conditions_for(m)]


def calibration_judge_tables(wildcards):
    """Judge tables of the calibration conditions (known once calibration_select has run)."""
    static = set(judge_tables())
    return [t for m in PROMPT.calibration_models for t in
            (f"{RESULTS}/judge/{m}/{c}.parquet" for c in all_conditions(m)) if t not in static]


def prompt_effect_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/prompt_effects.parquet", model=PROMPT.models)


def calibration_tables():
    return expand(f"{RESULTS}/calibration/{{model}}/calibration.parquet",
                  model=PROMPT.calibration_models)


def profile_tables():
    return sdf_effect_tables() + prompt_effect_tables()


def profile_outputs():
    """profiles.parquet and the calibration tables, when those stages are on."""
    out = calibration_tables()
    if PROMPT.models or SDF.models:
        out.append(f"{RESULTS}/metrics/profiles.parquet")
    return out
