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
    condition="[A-Za-z0-9_.+-]+",
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


def model_runtime_of(name):
    """The model keys that can change generated text (params of rollouts); display names and
    GPU counts are left out so editing them reruns nothing."""
    spec = config["models"][name]
    return {k: spec[k] for k in ("backend", "dtype", "device", "batch_size", "max_model_len")}


def model_runtime(wildcards):
    return model_runtime_of(wildcards.model)


def goals_source():
    """The goal CSV: a configured local file, or the verified AdvBench download."""
    return config["goals"]["path"] or "resources/advbench/harmful_behaviors.csv"


# ----------------------------------------------------------------------------- SDF

from motivation_profiles.sdf.plan import SDFPlan

SDF = SDFPlan.from_config(config)


def conditions_for(model):
    """Every rollout condition of one model: the base conditions, then its SDF branches."""
    return BASE_CONDITIONS + SDF.conditions(model)


def rollout_inputs(wildcards):
    """Extra inputs of a rollout job: the condition's adapter, if it has one."""
    adapter = SDF.adapter_of(wildcards.condition)
    if adapter is None:
        return {}
    return {"adapter": f"{RESULTS}/lora/{wildcards.model}/{adapter}"}


def condition_params(wildcards):
    """What a condition changes in the rollout, besides its inputs."""
    return SDF.condition_spec(wildcards.condition, model=wildcards.model)


def rollout_params(wildcards):
    r = config["rollouts"]
    return {k: r[k] for k in ("seeds", "temperature", "top_p", "max_new_tokens",
                              "max_turns", "stop")}


def metrics_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/conditions.parquet", model=MODELS)


def baseline_metrics_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/by_condition/baseline.parquet", model=MODELS)


def figure_names():
    return ["baseline_compliance"] + SDF.figures()


def figure_files():
    return expand(f"{RESULTS}/figures/{{name}}.{{ext}}", name=figure_names(), ext=FIGURE_FORMATS)
