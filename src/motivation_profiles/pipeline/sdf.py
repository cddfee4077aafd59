"""Rule entry points of workflow/rules/sdf.smk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from motivation_profiles.pipeline.common import job_provenance

log = logging.getLogger("motivation_profiles")


# ----------------------------------------------------------------------------- SDF


def _document_backend(snakemake: Any):
    """The generator behind the generation interface: a cached local model or Anthropic."""
    from motivation_profiles.backends.anthropic import HostedBackend
    from motivation_profiles.backends.factory import anthropic_client, cached_local_backend

    spec, hosted = snakemake.params.spec, snakemake.params.hosted
    gen = spec["generator"]
    if gen["backend"] == "local":
        backend = cached_local_backend(gen["model"], spec["model"], snakemake.input.model, hosted)
        return backend, backend.ledger_frame
    client = anthropic_client(hosted)
    return HostedBackend(client, gen["model"]), client.ledger_frame


def generate_documents(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.sdf.doc_filters import filter_documents
    from motivation_profiles.sdf.documents import (
        FilterSpec,
        PipelineSpec,
        PromptTemplates,
        generate_documents,
        load_external_documents,
    )
    from motivation_profiles.sdf.materials import Universe, load_universe, split_universe

    universe_name = snakemake.wildcards.universe
    spec = snakemake.params.spec
    filters = FilterSpec.from_dict(spec["filters"])
    prov = job_provenance(snakemake, params=dict(snakemake.params.items()))
    if spec["external"]:
        docs = load_external_documents(snakemake.input.external, universe_name)
        split_universe(universe_name)
        universe = Universe(id=universe_name, kind="external", universe_context="",
                            key_fact="")
        docs, report = filter_documents(docs, universe, filters)
        from motivation_profiles.backends.cache import LEDGER_COLUMNS

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

    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.sdf.dataset import DatasetSpec, build_dataset
    from motivation_profiles.sdf.materials import apply_name

    p = snakemake.params
    docs = read_table(snakemake.input.documents)
    if p.rename:
        docs = docs.assign(text=docs["text"].map(lambda t: apply_name(t, *p.rename)))
    tok = AutoTokenizer.from_pretrained(snakemake.input.model)
    spec = DatasetSpec.from_dict(p.dataset, token_budget=p.token_budget)
    table, stats = build_dataset(docs, tok, spec, source=snakemake.wildcards.universe)
    write_table(table, snakemake.output[0],
                job_provenance(snakemake, params={**dict(p.items()), "stats": stats}))


def train_lora(snakemake: Any) -> None:
    from motivation_profiles.core.hashing import canonical_json, config_hash
    from motivation_profiles.sdf.launch import launch
    from motivation_profiles.sdf.train import LoraSpec, TrainSpec

    p = snakemake.params
    training = dict(p.training)
    processes = training.pop("processes")
    out = Path(snakemake.output[0])
    prov = job_provenance(snakemake, params=dict(p.items()))
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
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.sdf.belief import belief_table
    from motivation_profiles.sdf.materials import load_universe

    p = snakemake.params
    table = belief_table(snakemake.input.model, load_universe(snakemake.input.universe),
                         adapter=snakemake.input.adapter,
                         organism=snakemake.input.get("organism"),
                         dtype=p.model["dtype"], device=p.model["device"], rename=p.rename)
    table.insert(0, "model", snakemake.wildcards.model)
    table.insert(1, "branch", snakemake.wildcards.universe)
    log.info("margins (mean log p per token, fact - negation):\n%s",
             table.groupby("checkpoint", sort=False)["margin"].first().to_string())
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def sdf_profile(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.metrics.profiles import sdf_effects

    p = snakemake.params
    df = pd.concat([read_table(f) for f in snakemake.input.tables], ignore_index=True)
    table = sdf_effects(df, n_boot=p.bootstrap_samples, level=p.ci_level, seed=p.seed)
    log.info("\n%s", table[table["quantity"].isin(["delta_gap", "S_A", "S_B"])].to_string())
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))
