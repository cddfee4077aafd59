"""Entry points called by workflow_scripts/*.py with Snakemake's ``snakemake`` object.

Each function reads paths and params from the job, calls the package, and writes outputs with
provenance metadata. Logging (and tqdm progress bars) go to the rule's ``log:`` file.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger("motivation_profiles")


def run(snakemake: Any, step: Callable[[Any], None]) -> None:
    """Run ``step(snakemake)`` with logging and stderr sent to the job's log file."""
    log_path = Path(snakemake.log[0]) if len(snakemake.log) else None
    stream = open(log_path, "a") if log_path else sys.stderr  # noqa: SIM115
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(stream):
            log.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards))
            step(snakemake)
            log.info("rule %s done in %.1f s", snakemake.rule, time.perf_counter() - t0)
    except BaseException:
        log.exception("rule %s failed", snakemake.rule)
        raise
    finally:
        root.removeHandler(handler)
        if stream is not sys.stderr:
            stream.close()


def _provenance(snakemake: Any, inputs: list[str] | None = None,
                params: dict[str, Any] | None = None) -> dict[str, Any]:
    from .provenance import provenance_record

    return provenance_record(
        rule=snakemake.rule, config=snakemake.config,
        inputs=inputs if inputs is not None else list(snakemake.input), params=params,
    )


# ----------------------------------------------------------------------------- rules


def prepare_model(snakemake: Any) -> None:
    from .models import prepare_model as prepare

    prepare(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0])


def advbench(snakemake: Any) -> None:
    from .data import download

    download(snakemake.params.url, snakemake.output[0], sha256=snakemake.params.sha256)


def goals(snakemake: Any) -> None:
    from .data import load_goals
    from .provenance import write_table

    p = snakemake.params
    if p.sha256 is None:
        log.warning("goals.sha256 is null: the goal file is NOT verified against a checksum")
    df = load_goals(snakemake.input.goals, sha256=p.sha256, n=p.n, seed=p.seed)
    log.info("kept %d goals (n=%s, seed=%d)", len(df), p.n, p.seed)
    write_table(df, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def _client(hosted: dict[str, Any]):
    from .llm import AnthropicClient

    return AnthropicClient(
        hosted["cache_dir"], base_url=hosted["base_url"], max_retries=hosted["max_retries"],
        timeout=hosted["timeout_s"], batch_threshold=hosted["batch_threshold"],
        poll_interval=hosted["poll_interval_s"], max_resubmits=hosted["max_resubmits"],
        prices=hosted["prices"], show_progress=True)


def local_backend(spec: dict[str, Any], model_dir: str, *, adapter: str | None = None,
                  steering: Any = None):
    """The generation backend a local model's config asks for: ``hf`` (transformers, CPU or
    GPU) or ``vllm`` (GPU, tensor-parallel over the model's ``gpus``)."""
    if spec["backend"] == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend.from_pretrained(
            model_dir, dtype=spec["dtype"], tensor_parallel_size=max(1, spec["gpus"]),
            max_model_len=spec["max_model_len"], adapter=adapter, steering=steering)
    from .generation import HFBackend

    return HFBackend.from_pretrained(
        model_dir, dtype=spec["dtype"], device=spec["device"], adapter=adapter,
        batch_size=spec["batch_size"], max_model_len=spec["max_model_len"], steering=steering)


def _cached_local(name: str, spec: dict[str, Any], model_dir: str, hosted: dict[str, Any]):
    """A local model behind the response cache (keyed by the checkpoint's content hash)."""
    from .llm import CachedBackend, ResponseCache
    from .provenance import sha256_path

    inner = local_backend(spec, model_dir)
    return CachedBackend(inner, ResponseCache(hosted["cache_dir"]),
                         model_id=f"{name}@{sha256_path(model_dir)}")


def rollouts(snakemake: Any) -> None:
    from .config import canonical_json, config_hash
    from .data import PromptSet
    from .evaluation.rollouts import rollout_meta, run_raw_rollouts, run_rollouts
    from .generation import SamplingParams
    from .provenance import read_table, write_table

    p = snakemake.params
    spec, gen, cond = p.model, p.generation, p.condition
    steer = cond.get("steering")
    prompts = PromptSet.from_config(p.prompts, rename=cond["rename"],
                                    system_suffix=cond["claim"] or "")
    adapter = snakemake.input.get("adapter")
    raw = bool(steer and steer["raw"])
    params = SamplingParams(temperature=gen["temperature"], top_p=gen["top_p"],
                            max_new_tokens=cond["raw_max_new_tokens"] if raw
                            else gen["max_new_tokens"], stop=() if raw else tuple(gen["stop"]))
    goals_df = read_table(snakemake.input.goals)
    steering, layers = None, None
    if steer and steer["vector"] is not None:
        from .steering import Steering
        from .workflow_steering import selected_layers

        layers = selected_layers(snakemake.input.layers)
        steering = Steering.from_file(snakemake.input.vector, layers, steer["multiplier"])
        log.info("steering: %s x %+g at layers %s", steer["vector"], steer["multiplier"],
                 layers)
    if spec["backend"] == "anthropic":
        from .llm import HostedBackend

        backend = HostedBackend(_client(p.hosted), spec["model_id"])
    else:
        backend = local_backend(spec, snakemake.input.model, adapter=adapter, steering=steering)
    meta = rollout_meta(model=snakemake.wildcards.model, condition=snakemake.wildcards.condition,
                        adapter=cond["adapter"], backend=backend.name, prompts=prompts,
                        params=params, max_turns=1 if raw else gen["max_turns"],
                        prefill=None if raw else gen["prefill"], claim=cond["claim"])
    meta.update(steering_vector=steer["vector"] if steer else None,
                steering_multiplier=float(steer["multiplier"]) if steer else 0.0,
                steering_layers=",".join(map(str, layers)) if layers else None)
    out = Path(snakemake.output[0])
    if raw:
        df = run_raw_rollouts(backend, goals_df, seeds=gen["seeds"], params=params, meta=meta)
        log.info("raw rollouts: %d, finish %s", len(df),
                 df["finish_reasons"].map(lambda f: f[-1]).value_counts().to_dict())
        write_table(df, out, _provenance(snakemake, params=dict(p.items())))
        return
    key = config_hash({"params": canonical_json(dict(p.items())),
                       "inputs": _provenance(snakemake)["inputs"]})
    df = run_rollouts(backend, prompts, goals_df, seeds=gen["seeds"], params=params,
                      max_turns=gen["max_turns"], meta=meta, prefill=gen["prefill"],
                      checkpoint_dir=out.parent / f".{out.stem}.partial", checkpoint_key=key)
    log.info("outcomes: %s", df.groupby("tier")["outcome"].value_counts().to_dict())
    write_table(df, out, _provenance(snakemake, params=dict(p.items())))
    shutil.rmtree(out.parent / f".{out.stem}.partial", ignore_errors=True)


def metrics(snakemake: Any) -> None:
    from .evaluation.metrics import condition_metrics
    from .provenance import read_table, write_table

    p = snakemake.params
    table = condition_metrics(read_table(snakemake.input.table), n_boot=p.bootstrap_samples,
                              level=p.ci_level, seed=p.seed)
    log.info("\n%s", table.T.to_string())
    write_table(table, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def metrics_table(snakemake: Any) -> None:
    from .provenance import read_table, write_table

    table = pd.concat([read_table(f) for f in snakemake.input.tables], ignore_index=True)
    write_table(table, snakemake.output[0], _provenance(snakemake))


def figure_baseline(snakemake: Any) -> None:
    from .figures import baseline_compliance
    from .provenance import read_table

    df = pd.concat([read_table(f) for f in snakemake.input.tables], ignore_index=True)
    baseline_compliance(df, snakemake.params.display_names, list(snakemake.output),
                        dpi=snakemake.params.dpi)


# ----------------------------------------------------------------------------- SDF


def _document_backend(snakemake: Any):
    """The generator behind the generation interface: a cached local model or Anthropic."""
    from .llm import HostedBackend

    spec, hosted = snakemake.params.spec, snakemake.params.hosted
    gen = spec["generator"]
    if gen["backend"] == "local":
        backend = _cached_local(gen["model"], spec["model"], snakemake.input.model, hosted)
        return backend, backend.ledger_frame
    client = _client(hosted)
    return HostedBackend(client, gen["model"]), client.ledger_frame


def generate_documents(snakemake: Any) -> None:
    from .provenance import write_table
    from .sdf.documents import (
        FilterSpec,
        PipelineSpec,
        PromptTemplates,
        filter_documents,
        generate_documents,
        load_external_documents,
    )
    from .sdf.materials import Universe, load_universe, split_universe

    universe_name = snakemake.wildcards.universe
    spec = snakemake.params.spec
    filters = FilterSpec.from_dict(spec["filters"])
    prov = _provenance(snakemake, params=dict(snakemake.params.items()))
    if spec["external"]:
        docs = load_external_documents(snakemake.input.external, universe_name)
        split_universe(universe_name)
        universe = Universe(id=universe_name, kind="external", universe_context="",
                            key_fact="")
        docs, report = filter_documents(docs, universe, filters)
        from .llm import LEDGER_COLUMNS

        ledger = pd.DataFrame(columns=[*LEDGER_COLUMNS, "universe"])
    else:
        universe = load_universe(snakemake.input.universe)
        backend, ledger_of = _document_backend(snakemake)
        gen = spec["generator"]
        docs, report = generate_documents(
            universe, backend, PipelineSpec.from_dict(gen),
            PromptTemplates.from_dir(gen["prompts_dir"]), filters,
            generator=f"{gen['backend']}:{gen['model']}")
        ledger = ledger_of().assign(universe=universe_name)
    log.info("filters:\n%s", report.to_string(index=False))
    log.info("kept %d documents for %s", len(docs), universe_name)
    if len(ledger):
        log.info("ledger: %d requests, %d input + %d output tokens, $%.4f", len(ledger),
                 ledger["input_tokens"].sum(), ledger["output_tokens"].sum(),
                 ledger["cost_usd"].sum())
    write_table(report.assign(universe=universe_name), snakemake.output.filters, prov)
    write_table(ledger, snakemake.output.ledger, prov)
    write_table(docs, snakemake.output.documents, prov)


def sdf_dataset(snakemake: Any) -> None:
    from transformers import AutoTokenizer

    from .provenance import read_table, write_table
    from .sdf.dataset import DatasetSpec, build_dataset
    from .sdf.materials import apply_name

    p = snakemake.params
    docs = read_table(snakemake.input.documents)
    if p.rename:
        docs = docs.assign(text=docs["text"].map(lambda t: apply_name(t, *p.rename)))
    tok = AutoTokenizer.from_pretrained(snakemake.input.model)
    spec = DatasetSpec.from_dict(p.dataset, token_budget=p.token_budget)
    table, stats = build_dataset(docs, tok, spec, source=snakemake.wildcards.universe)
    write_table(table, snakemake.output[0],
                _provenance(snakemake, params={**dict(p.items()), "stats": stats}))


def train_lora(snakemake: Any) -> None:
    from .config import canonical_json, config_hash
    from .sdf.train import LoraSpec, TrainSpec, launch

    p = snakemake.params
    training = dict(p.training)
    processes = training.pop("processes")
    out = Path(snakemake.output[0])
    prov = _provenance(snakemake, params=dict(p.items()))
    LoraSpec.from_dict(p.lora)  # validate before launching
    TrainSpec.from_dict(training)
    spec = {
        "model_dir": snakemake.input.model,
        "dataset": snakemake.input.dataset,
        "output_dir": str(out),
        "lora": dict(p.lora),
        "train": training,
        "init_adapter": snakemake.input.get("init"),
        "work_dir": str(out.parent / f".{out.name}.partial"),
        "device": p.device,
        "provenance": prov,
        "resume_key": config_hash({"params": canonical_json(dict(p.items())),
                                   "inputs": prov["inputs"]}),
    }
    launch(spec, processes, snakemake.input.get("accelerate_config"))


def belief_check(snakemake: Any) -> None:
    from .provenance import write_table
    from .sdf.belief import belief_table
    from .sdf.materials import load_universe

    p = snakemake.params
    table = belief_table(snakemake.input.model, load_universe(snakemake.input.universe),
                         adapter=snakemake.input.adapter,
                         organism=snakemake.input.get("organism"),
                         dtype=p.model["dtype"], device=p.model["device"], rename=p.rename)
    table.insert(0, "model", snakemake.wildcards.model)
    table.insert(1, "branch", snakemake.wildcards.universe)
    log.info("margins (mean log p per token, fact - negation):\n%s",
             table.groupby("checkpoint", sort=False)["margin"].first().to_string())
    write_table(table, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def sdf_profile(snakemake: Any) -> None:
    from .evaluation.profiles import sdf_effects
    from .provenance import read_table, write_table

    p = snakemake.params
    df = pd.concat([read_table(f) for f in snakemake.input.tables], ignore_index=True)
    table = sdf_effects(df, n_boot=p.bootstrap_samples, level=p.ci_level, seed=p.seed)
    log.info("\n%s", table[table["quantity"].isin(["delta_gap", "S_A", "S_B"])].to_string())
    write_table(table, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def figure_sdf(snakemake: Any) -> None:
    from . import figures
    from .provenance import read_table

    df = pd.concat([read_table(f) for f in snakemake.input.tables], ignore_index=True)
    draw = getattr(figures, snakemake.params.kind)
    draw(df, snakemake.params.display_names, list(snakemake.output), dpi=snakemake.params.dpi)


# ----------------------------------------------------------------------------- judge, profiles


def judge(snakemake: Any) -> None:
    """Score every rollout's scratchpad on Directions A and B (k samples each)."""
    from .evaluation.judge import Rubric, agreement_summary, judge_rollouts
    from .generation import SamplingParams
    from .llm import HostedBackend
    from .provenance import read_table, write_table

    p = snakemake.params
    spec = p.judge
    rubric = Rubric.load(snakemake.input.rubric)
    if spec["backend"] == "local":
        backend = _cached_local(spec["model"], p.model, snakemake.input.model, p.hosted)
        ledger_of = backend.ledger_frame
    else:
        client = _client(p.hosted)
        backend = HostedBackend(client, spec["model"])
        ledger_of = client.ledger_frame
    params = SamplingParams(temperature=spec["temperature"], top_p=spec["top_p"],
                            max_new_tokens=spec["max_tokens"])
    rollouts_df = read_table(snakemake.input.table)
    meta = {"judge_backend": spec["backend"], "judge_model": spec["model"],
            "rubric": rubric.name, "rubric_sha256": rubric.sha256, "samples": spec["samples"]}
    table = judge_rollouts(rollouts_df, backend, rubric, samples=spec["samples"], params=params,
                           prefill=spec["prefill"], meta=meta)
    ledger = ledger_of()
    log.info("judge: %d rollouts, statuses %s; %d requests not cached (%d output tokens)",
             len(table), table["status"].value_counts().to_dict(), len(ledger),
             int(ledger["output_tokens"].sum()) if len(ledger) else 0)
    for d in ("a", "b"):
        log.info("agreement, direction %s: %s", d.upper(),
                 agreement_summary([list(v) for v in table[f"{d}_votes"]]))
    write_table(table, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def _read_all(files: Any) -> pd.DataFrame:
    from .provenance import read_table

    return pd.concat([read_table(f) for f in files], ignore_index=True)


def prompt_profile(snakemake: Any) -> None:
    """Effects of every prompt claim (per strength) on the base model, with S_A and S_B."""
    from .evaluation.profiles import prompt_effects
    from .provenance import write_table

    p = snakemake.params
    table = prompt_effects(_read_all(snakemake.input.tables), interventions=p.interventions,
                           strengths=p.strengths, n_boot=p.bootstrap_samples,
                           level=p.ci_level, seed=p.seed)
    log.info("\n%s", table[table["quantity"].isin(["S_A", "S_B"])].to_string())
    write_table(table, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def calibration_select(snakemake: Any) -> None:
    """Appendix C.1: which SDF checkpoints the prompt interventions are calibrated on."""
    from .evaluation.calibration import select_checkpoints
    from .provenance import write_table

    p = snakemake.params
    table = select_checkpoints(_read_all(snakemake.input.tables), model=snakemake.wildcards.model,
                               reference=p.reference, candidates=p.candidates, signal=p.signal,
                               max_per_family=p.max_per_family)
    log.info("\n%s", table.to_string())
    write_table(table, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def calibration(snakemake: Any) -> None:
    from .evaluation.calibration import calibration_effects
    from .provenance import read_table, write_table

    p = snakemake.params
    selection = read_table(snakemake.input.selection)
    table = calibration_effects(_read_all(snakemake.input.tables), selection,
                                interventions=p.interventions, strengths=p.strengths,
                                n_boot=p.bootstrap_samples, level=p.ci_level, seed=p.seed)
    log.info("recovered: %s\n%s", table["recovered"].iloc[0],
             table[table["quantity"].isin(["S_A", "S_B"])].to_string())
    write_table(table, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def profiles(snakemake: Any) -> None:
    """S_A and S_B of every model x method (x strength, naming) in one table."""
    from .evaluation.profiles import profile_rows
    from .provenance import write_table

    table = profile_rows(_read_all(snakemake.input.tables))
    table.insert(1, "display_name", table["model"].map(snakemake.params.display_names))
    log.info("\n%s", table[["model", "method", "strength", "naming", "quantity", "estimate",
                            "ci_low", "ci_high"]].to_string())
    write_table(table, snakemake.output[0], _provenance(snakemake))


def figure(snakemake: Any) -> None:
    """Any figure drawn by ``figures.<params.kind>`` from the concatenated input tables."""
    import importlib

    module = importlib.import_module(f".{snakemake.params.get('module', 'figures')}",
                                     __package__)
    draw = getattr(module, snakemake.params.kind)
    files = [*snakemake.input.tables, *snakemake.input.get("more", [])]
    draw(_read_all(files), snakemake.params.display_names, list(snakemake.output),
         dpi=snakemake.params.dpi)
