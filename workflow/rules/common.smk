# Config validation, wildcard lists and input functions shared by every stage.

import re
import sys

from snakemake.exceptions import WorkflowError

sys.path.insert(0, os.path.join(workflow.basedir, "src"))

from motivation_profiles.config.validate import ConfigError, validate_config

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


from motivation_profiles.pipeline.registry import code_inputs

# Each scripted rule declares code=code_inputs("<its name>") as an input. That is the list of
# files of every package module its entry point imports, derived from the import graph (never
# listed by hand), so editing a module reruns exactly the jobs whose code imports it. Snakemake
# compares checksums of small files, so a touched but unchanged module reruns nothing.


def model_source(wildcards):
    """The model keys that determine the prepared checkpoint (params of prepare_model)."""
    spec = config["models"][wildcards.model]
    return {k: spec[k] for k in ("source", "hub_id", "revision", "path", "random") if k in spec}


def is_hosted(name):
    return config["models"][name]["source"] == "anthropic"


def goals_table(model):
    """The goal table a model's rollouts use: the run's sample, or for a simulated model with
    `goals_n` its own larger sample of the same file."""
    n = config["models"][model].get("goals_n")
    return f"{RESULTS}/goals/goals_n{n}.parquet" if n else f"{RESULTS}/goals/goals.parquet"


def is_simulated(name):
    """A simulated organism (source simulated): a planted policy file, no weights; its SDF
    branches are virtual (no documents, no training) and a simulated judge scores it."""
    return config["models"][name]["source"] == "simulated"


SIMULATED = [m for m in config["models"] if is_simulated(m)]


def model_gpus(name):
    return config["models"][name].get("gpus", 0)


def model_runtime_of(name):
    """The model keys that can change generated text (params of rollouts); display names, GPU
    counts and the speed-only keys (pipeline/common.py: RUNTIME_ONLY, read by the job from
    its config) are left out so editing them reruns nothing."""
    spec = config["models"][name]
    if is_hosted(name):
        out = {k: spec[k] for k in ("backend", "model_id")}
    elif is_simulated(name):
        out = {k: spec[k] for k in ("backend", "policy", "seeds") if k in spec}
    else:
        out = {k: spec[k] for k in ("backend", "dtype", "device", "batch_size", "max_model_len")}
        if spec.get("merge_adapter"):  # merged weights are rounded again: recorded, reruns
            out["merge_adapter"] = True
    if spec.get("reasoning"):  # <think> stripping changes outcomes and continuations
        out["reasoning"] = True
    return out


def model_runtime(wildcards):
    return model_runtime_of(wildcards.model)


def goals_source():
    """The goal CSV: a configured local file, or the verified AdvBench download."""
    return config["goals"]["path"] or "resources/advbench/harmful_behaviors.csv"


# ----------------------------------------------------------------------------- SDF

from motivation_profiles.sdf.plan import SDFPlan

SDF = SDFPlan.from_config(config)


from motivation_profiles.prompts.plan import PromptPlan, split_condition

PROMPT = PromptPlan.from_config(config, SDF)

from motivation_profiles.steering.names import parse_steer_condition
from motivation_profiles.steering.plan import SteeringPlan

STEER = SteeringPlan.from_config(config)

from motivation_profiles.sdf.organism import INSTRUCT, ORGANISM_DIR, organism_of, screened

# The model organism of each model (models.<name>.organism): every condition but
# baseline-instruct and the SDF branches (which carry it) runs on base + this adapter.
ORGANISMS = {m: organism_of(config, m) for m in MODELS}
SCREENED = screened(config)


def organism_adapter(model):
    """The organism adapter directory of a model (None: no organism, or hosted)."""
    return ORGANISMS[model].adapter_dir(RESULTS)


def organism_inputs(wildcards):
    """{"organism": dir} for a model with an organism adapter, else {}."""
    adapter = organism_adapter(wildcards.model)
    return {"organism": adapter} if adapter is not None else {}


def organism_param(wildcards):
    return ORGANISMS[wildcards.model].spec()


def conditions_for(model):
    """Every statically known AF rollout condition of one model: the base conditions, its SDF
    branches, its prompt interventions and its steered conditions (calibration conditions come
    from a checkpoint; raw-AdvBench conditions are not AF conditions: see raw_conditions)."""
    instruct = [INSTRUCT] if model in SCREENED else []
    return (BASE_CONDITIONS + instruct + SDF.conditions(model) + PROMPT.conditions(model)
            + STEER.steer_conditions(model))


def steering_spec(wildcards):
    """The steering vector and multiplier of a steer-/raw- condition (None otherwise)."""
    parsed = parse_steer_condition(wildcards.condition)
    if parsed is None:
        return None
    return {"vector": parsed.vector.name if parsed.vector else None,
            "multiplier": parsed.multiplier, "raw": parsed.raw}


def rollout_inputs(wildcards):
    """Inputs of a rollout job: its goal table, the local checkpoint (a simulated model's
    policy file) and the condition's adapter: an SDF branch's (which continues from the
    organism), else the model's organism, except for baseline-instruct (the bare instruct
    model, screening). A simulated model's organism is its planted policy: no adapter."""
    inputs = {"goals": goals_table(wildcards.model)}
    if is_simulated(wildcards.model):
        inputs["model"] = config["models"][wildcards.model]["policy"]
    elif not is_hosted(wildcards.model):
        inputs["model"] = f"resources/models/{wildcards.model}"
    organism = organism_adapter(wildcards.model)
    if organism is not None and wildcards.condition != INSTRUCT:
        inputs["adapter"] = organism
    steer = steering_spec(wildcards)
    if steer is not None:
        if steer["vector"] is not None:
            vdir = f"{RESULTS}/vectors/{wildcards.model}"
            inputs["vector"] = f"{vdir}/{STEER.vector_file(steer['vector'])}"
            inputs["layers"] = f"{vdir}/layers.parquet"
        return inputs
    adapter = PROMPT.condition_spec(wildcards.condition, model=wildcards.model)["adapter"]
    if adapter is not None and not is_simulated(wildcards.model):  # simulated: virtual branch
        inputs["adapter"] = f"{RESULTS}/lora/{wildcards.model}/{adapter}"
    return inputs


def condition_params(wildcards):
    """What a condition changes in the rollout besides its inputs: adapter name, AI-name
    replacement, the appended claim's text (so editing one claim reruns its conditions), and
    for steering conditions the vector, multiplier and raw flag."""
    organism = (ORGANISMS[wildcards.model].label if wildcards.condition != INSTRUCT
                else None)
    steer = steering_spec(wildcards)
    if steer is not None:
        spec = {"adapter": organism, "rename": None, "claim": None, "intervention": None,
                "strength": None, "steering": steer}
        if steer["raw"]:
            spec["raw_max_new_tokens"] = config["steering"]["raw"]["max_new_tokens"]
            spec["raw_seeds"] = config["steering"]["raw"]["seeds"]
        return spec
    spec = PROMPT.condition_spec(wildcards.condition, model=wildcards.model)
    if spec["adapter"] is None:
        spec["adapter"] = organism
    return {**spec, "steering": None}


# Sampling settings of every rollout job (a constant, not an input function: Snakemake
# introspects each input function's signature once per job, which adds up over ~300 jobs).
ROLLOUT_GENERATION = {k: config["rollouts"].get(k) for k in (
    "seeds", "temperature", "top_p", "max_new_tokens", "max_turns", "stop", "prefill",
    "output_mode", "output_tokens")}


def rollout_hosted(wildcards):
    """API settings, for hosted models only (local rollouts do not depend on them)."""
    return hosted_settings() if is_hosted(wildcards.model) else None


def metrics_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/conditions.parquet", model=MODELS)


def baseline_metrics_tables():
    """Figure 2's tables: every model's baseline (on its organism) and, for screened models,
    the bare instruct model's (baseline-instruct)."""
    return (expand(f"{RESULTS}/metrics/{{model}}/by_condition/baseline.parquet", model=MODELS)
            + [f"{RESULTS}/metrics/{m}/by_condition/{INSTRUCT}.parquet" for m in SCREENED])


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
    if STEER.models and has_pair(STEER.profile_interventions()) and "profile_plane" not in names:
        names.append("profile_plane")
    names = names + ["judge_scores"] + STEER.figures(SDF.models)
    return names + (["planted_recovery"] if SIMULATED else [])


def validation_tables():
    """The planted-recovery table of every simulated model (rules/validation.smk)."""
    return expand(f"{RESULTS}/validation/{{model}}/planted_recovery.parquet", model=SIMULATED)


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
    if isinstance(external, str):
        return {"external": external}
    if external is not None:  # a hub dataset: downloaded by the job itself
        return {}
    inputs = {"universe": universe_file(wildcards.universe), "prompts": SDF_PROMPTS}
    if SDF_GEN["backend"] == "local":
        inputs["model"] = f"resources/models/{SDF_GEN['model']}"
    return inputs

def document_params(wildcards):
    """Everything that shapes the documents (prices and polling do not, so they rerun nothing)."""
    external = config["sdf"]["external_documents"].get(wildcards.universe)
    if external is not None:
        return {"external": True if isinstance(external, str) else dict(external),
                "filters": config["sdf"]["filters"]}
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
    init = SDF.init_dir(wildcards.model, wildcards.universe, RESULTS)
    if init is not None:
        inputs["init"] = init
    if model_gpus(wildcards.model) > 1:
        inputs["accelerate_config"] = config["sdf"]["training"]["accelerate_config"]
    return inputs

def belief_inputs(wildcards):
    branch = wildcards.universe
    inputs = {"model": f"resources/models/{wildcards.model}",
              "adapter": f"{RESULTS}/lora/{wildcards.model}/{branch}",
              "universe": universe_file(SDF.universe_of(branch))}
    init = SDF.init_dir(wildcards.model, branch, RESULTS)
    if init is not None:
        inputs["organism"] = init
    return inputs

def sdf_effect_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/sdf_effects.parquet", model=SDF.models)


def sdf_rate_tables():
    """Per-condition metrics of the standard-strength SDF branches and the noise adapter
    (Figure 3's truncated / unparseable rates per tier)."""
    if "standard" not in SDF.strengths:
        return []
    conds = ["sdf-noise"] + [f"sdf-{i}" for i in SDF.interventions]
    return [f"{RESULTS}/metrics/{m}/by_condition/{c}.parquet" for m in SDF.models for c in conds]

def sdf_belief_tables():
    return [f"{RESULTS}/sdf/belief/{m}/{b}.parquet" for m in SDF.models if not is_simulated(m)
            for b in SDF.belief_branches() if b in SDF.branches_of(m)]


# ----------------------------------------------------------------------------- judge, profiles

JUDGE = config["judge"]


def judge_inputs(wildcards):
    inputs = {"table": f"{RESULTS}/rollouts/{wildcards.model}/{wildcards.condition}.parquet",
              "rubric": JUDGE["rubric"]}
    if is_simulated(wildcards.model):
        inputs["policy"] = config["models"][wildcards.model]["policy"]
    elif JUDGE["backend"] == "local":
        inputs["model"] = f"resources/models/{JUDGE['model']}"
    return inputs


def judge_subject(wildcards):
    """The judged model's policy when it is simulated (then the simulated judge scores it)."""
    return model_runtime_of(wildcards.model) if is_simulated(wildcards.model) else None


def judge_params():
    """Everything that changes a judge score: the judge section and, for a local judge, the
    model keys that change its text (hosted settings only change how answers are fetched)."""
    params = {"judge": JUDGE, "hosted": hosted_settings(), "model": None}
    if JUDGE["backend"] == "local":
        params["model"] = model_runtime_of(JUDGE["model"])
    return params


def selected_checkpoints(model):
    """The SDF checkpoints calibration_select chose for one model (evaluates the checkpoint)."""
    from motivation_profiles.core.provenance import read_table

    table = read_table(checkpoints.calibration_select.get(model=model).output[0])
    return table.filter(table["selected"])["checkpoint"].to_list()


def calibration_condition_list(model):
    """Every rollout condition the calibration of one model reads (needs the checkpoint)."""
    return PROMPT.calibration_conditions(selected_checkpoints(model))


def all_conditions(model):
    """Every rollout condition of a model, the calibration ones included."""
    extra = calibration_condition_list(model) if model in PROMPT.calibration_models else []
    return list(dict.fromkeys(conditions_for(model) + extra))


def judge_tables(steer=True):
    """Judge tables of every statically known AF condition (listed by a dry run);
    ``steer=False`` leaves the steered conditions out (the judge-scores figure)."""
    return [f"{RESULTS}/judge/{m}/{c}.parquet" for m in MODELS for c in conditions_for(m)
            if steer or parse_steer_condition(c) is None]


def calibration_judge_tables(wildcards):
    """Judge tables of the calibration conditions (known once calibration_select has run)."""
    static = set(judge_tables())
    return [t for m in PROMPT.calibration_models for t in
            (f"{RESULTS}/judge/{m}/{c}.parquet" for c in all_conditions(m)) if t not in static]


def prompt_effect_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/prompt_effects.parquet", model=PROMPT.models)


def calibration_selection_tables():
    """The Appendix C.1 selection tables (Figure 8), one per calibrated model."""
    return expand(f"{RESULTS}/calibration/{{model}}/selection.parquet",
                  model=PROMPT.calibration_models)


def calibration_tables():
    return expand(f"{RESULTS}/calibration/{{model}}/calibration.parquet",
                  model=PROMPT.calibration_models)


def profile_tables():
    return sdf_effect_tables() + prompt_effect_tables() + steering_effect_tables()


def profile_outputs():
    """profiles.parquet and the calibration tables, when those stages are on."""
    out = calibration_tables()
    if PROMPT.models or SDF.models or STEER.models:
        out.append(f"{RESULTS}/metrics/profiles.parquet")
    return out


# ----------------------------------------------------------------------------- steering

STEERING = config["steering"]
STEERING_MATERIALS = [os.path.join(STEERING["materials_dir"], f)
                      for f in ("ooc_prompts.yaml", "keywords.yaml", "topics.txt")]


def raw_conditions(model):
    return STEER.raw_conditions(model)


def steering_effect_tables():
    return expand(f"{RESULTS}/metrics/{{model}}/steering_effects.parquet", model=STEER.models)


def pairs_file(model, pairset):
    return f"{RESULTS}/pairs/{model}/{pairset}.parquet"


def activation_dir(model, pairset):
    return f"{RESULTS}/activations/{model}/{pairset}"


def external_pairs(wildcards, pairset):
    return STEERING["external_pairs"].get(pairset)


def ooc_inputs(wildcards):
    pairset = f"ooc_{wildcards.concept}_{wildcards.split}"
    external = STEERING["external_pairs"].get(pairset)
    if external is not None:
        return {"external": external, "materials": STEERING_MATERIALS}
    return {"model": model_files(wildcards), "materials": STEERING_MATERIALS,
            **organism_inputs(wildcards)}


def model_files(wildcards):
    """What a local model's generation and activations read: its prepared checkpoint, or a
    simulated model's policy file (its behaviour and planted activations)."""
    if is_simulated(wildcards.model):
        return config["models"][wildcards.model]["policy"]
    return f"resources/models/{wildcards.model}"


def ic_settings(wildcards):
    """steering.ic with the model's own overrides (models.<m>.ic, simulated models)."""
    return STEER.ic_settings(wildcards.model)


def ooc_settings(wildcards):
    """steering.ooc with the model's own overrides (models.<m>.ooc, simulated models)."""
    return STEER.ooc_settings(wildcards.model)


def ic_sources(model, concept=None):
    """Rollout and judge tables IC pairs are drawn from (or the configured external file)."""
    external = STEERING["external_pairs"].get(f"ic_{concept}")
    if external is not None:
        return {"external": external}
    conds = STEER.ic_conditions(model, conditions_for(model))
    return {"rollouts": [f"{RESULTS}/rollouts/{model}/{c}.parquet" for c in conds],
            "judged": [f"{RESULTS}/judge/{model}/{c}.parquet" for c in conds]}


def fit_inputs(wildcards):
    return {"activations": [activation_dir(wildcards.model, ps)
                            for ps in STEER.fit_pairsets(wildcards.concept, wildcards.source)]}


def validation_activations(wildcards):
    """The validation pair sets a random control of {concept}_{source} is scored on."""
    sets = STEER.fit_pairsets(wildcards.concept, wildcards.source)
    return [activation_dir(wildcards.model, ps) for ps in sets if not ps.endswith("_train")]


def layer_diagnostics(wildcards):
    src = STEERING["layers"]["source"]
    return [f"{RESULTS}/vectors/{wildcards.model}/{c}_{src}.diagnostics.parquet"
            for c in STEER.concepts]


def all_vector_files(model):
    fitted = [f"{RESULTS}/vectors/{model}/{v}.safetensors" for v in STEER.fitted_vectors()]
    randoms = [f"{RESULTS}/vectors/{model}/{STEER.vector_file(v)}"
               for v in STEER.random_vectors()]
    return fitted + randoms


def vector_norm_tables():
    """Per-layer vector norms of every steered model (every steering figure's caption)."""
    return expand(f"{RESULTS}/vectors/{{model}}/norms.parquet", model=STEER.models)


def all_diagnostics(model):
    return [f.replace(".safetensors", ".diagnostics.parquet") for f in all_vector_files(model)]


def steering_summary_inputs(wildcards):
    conds = ["baseline"] + STEER.steer_conditions(wildcards.model)
    m = wildcards.model
    return {"metrics": [f"{RESULTS}/metrics/{m}/by_condition/{c}.parquet" for c in conds],
            "judged": [f"{RESULTS}/judge/{m}/{c}.parquet" for c in conds]}


def steering_summaries():
    return expand(f"{RESULTS}/steering/{{model}}/summary.parquet", model=STEER.models)


def raw_summaries():
    if not STEERING["raw"]["enabled"]:
        return []
    return expand(f"{RESULTS}/steering/{{model}}/raw.parquet", model=STEER.real_models)


def steering_outputs():
    """Every steering table the `all` target asks for (figures come through figure_files)."""
    out = steering_summaries() + raw_summaries()
    for m in STEER.models:
        out += all_diagnostics(m) + [f"{RESULTS}/vectors/{m}/layers.parquet",
                                     f"{RESULTS}/vectors/{m}/norms.parquet"]
        out += [f"{RESULTS}/pairs/{m}/{ps}.parquet" for ps in STEER.pairsets()]
    return out


# ---- steering rules (rules/steering.smk)

MODEL_DISPLAY_NAMES = {m: spec["display_name"] for m, spec in config["models"].items()}


def wildcard_gpus(wildcards):
    return model_gpus(wildcards.model)


def wildcard_gpu_mem_mb(wildcards):
    return max(16000, 64000 * model_gpus(wildcards.model))


def steering_figure_inputs(name):
    if name in ("steering_ooc", "steering_ic", "steering_random"):
        return steering_summaries()
    if name == "steering_raw":
        return raw_summaries()
    if name.startswith("token_heatmap_"):
        return expand(f"{RESULTS}/steering/{{model}}/token_cosines.parquet",
                      model=STEER.real_models)
    if name == "sdf_steering_alignment":
        return expand(f"{RESULTS}/steering/{{model}}/sdf_alignment.parquet",
                      model=STEER.alignment_models(SDF.models))
    if name == "steering_diagnostics":
        return [d for m in STEER.models for d in all_diagnostics(m)]
    raise ValueError(f"no inputs known for steering figure {name!r}")
