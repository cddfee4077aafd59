"""Rule entry points of workflow/rules/sdf.smk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from motivation_profiles.pipeline.common import job_provenance, read_all, runtime_spec

log = logging.getLogger("motivation_profiles")


# ----------------------------------------------------------------------------- SDF


def _document_backend(snakemake: Any):
    """The generator behind the generation interface: a cached local model or Anthropic."""
    from motivation_profiles.backends.anthropic import HostedBackend
    from motivation_profiles.backends.factory import anthropic_client, cached_local_backend

    spec, hosted = snakemake.params.spec, snakemake.params.hosted
    gen = spec["generator"]
    if gen["backend"] == "local":
        backend = cached_local_backend(
            gen["model"], runtime_spec(snakemake, gen["model"], spec["model"]),
            snakemake.input.model, hosted)
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
        if isinstance(spec["external"], dict):
            from motivation_profiles.sdf.documents import load_hub_documents

            hub = spec["external"]
            docs = load_hub_documents(hub["hub"], hub["revision"], universe_name)
            log.info("documents of %s: hub dataset %s@%s", universe_name, hub["hub"],
                     hub["revision"])
        else:
            docs = load_external_documents(snakemake.input.external, universe_name)
        split_universe(universe_name)
        universe = Universe(id=universe_name, kind="external", universe_context="",
                            key_fact="")
        docs, report = filter_documents(docs, universe, filters)
        from motivation_profiles.backends.cache import ledger_table

        ledger = ledger_table([])
    else:
        universe = load_universe(snakemake.input.universe)
        backend, ledger_of = _document_backend(snakemake)
        gen = spec["generator"]
        docs, report = generate_documents(
            universe, backend, PipelineSpec.from_dict(gen),
            PromptTemplates.from_dir(gen["prompts_dir"]), filters,
            generator=f"{gen['backend']}:{gen['model']}")
        ledger = ledger_of()
    ledger = ledger.with_columns(universe=pl.lit(universe_name, dtype=pl.Utf8))
    log.info("filters:\n%s", _text(report))
    log.info("kept %d documents for %s", len(docs), universe_name)
    if len(ledger):
        log.info("ledger: %d requests, %d input + %d output tokens, $%.4f", len(ledger),
                 ledger["input_tokens"].sum(), ledger["output_tokens"].sum(),
                 ledger["cost_usd"].sum())
    write_table(report.with_columns(universe=pl.lit(universe_name, dtype=pl.Utf8)),
                snakemake.output.filters, prov)
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
        docs = docs.with_columns(pl.Series("text", [apply_name(t, *p.rename)
                                                    for t in docs["text"].to_list()],
                                           dtype=pl.Utf8))
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
    table = table.select(pl.lit(snakemake.wildcards.model, dtype=pl.Utf8).alias("model"),
                         pl.lit(snakemake.wildcards.universe, dtype=pl.Utf8).alias("branch"),
                         pl.all())
    log.info("margins (mean log p per token, fact - negation):\n%s",
             _text(table.group_by("checkpoint", maintain_order=True)
                   .agg(pl.col("margin").first())))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def sdf_profile(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.metrics.profiles import sdf_effects

    p = snakemake.params
    df = read_all(snakemake.input.tables)
    table = sdf_effects(df, n_boot=p.bootstrap_samples, level=p.ci_level, seed=p.seed)
    log.info("\n%s", _text(table.filter(pl.col("quantity").is_in(["delta_gap", "S_A", "S_B"]))))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def _text(df: pl.DataFrame) -> str:
    """A table for the log: every row and column, no shape line or dtypes."""
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, fmt_str_lengths=200, tbl_width_chars=400):
        return str(df)
