"""Entry points of the steering rules (workflow/rules/steering.smk); one function per rule,
same name.

Each reads ``snakemake.input`` / ``params``, calls the package (``steering.*``,
``metrics.steering``) and writes its outputs with provenance. No logic of its own
beyond wiring, so every step is testable without Snakemake.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.pipeline.common import job_provenance, read_all, runtime_spec

log = logging.getLogger(__name__)


def _pairset(path: str) -> str:
    return Path(path).name


def _text(table: pl.DataFrame) -> str:
    """A table as log text: every row and column, strings in full."""
    with pl.Config(tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=1000, tbl_width_chars=1000,
                   tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        return str(table)


def _with_front(table: pl.DataFrame, **values: Any) -> pl.DataFrame:
    """``table`` with constant columns ``values`` first, in order."""
    return table.select(*(pl.lit(v).alias(k) for k, v in values.items()),
                        pl.exclude(list(values)))


# ----------------------------------------------------------------------------- pairs


def ooc_pairs(snakemake: Any) -> None:
    from motivation_profiles.backends.factory import cached_local_backend, local_backend
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.steering.materials import load_materials
    from motivation_profiles.steering.ooc import generate_ooc_pairs
    from motivation_profiles.steering.pair_files import read_pair_file
    from motivation_profiles.steering.pair_filters import filter_pairs

    p, wc = snakemake.params, snakemake.wildcards
    ooc = p.ooc
    materials = load_materials(Path(snakemake.input.materials[0]).parent)
    if p.external:
        pairs, rejections = filter_pairs(
            read_pair_file(snakemake.input.external, concept=wc.concept, source="ooc",
                           split=wc.split),
            materials, concept=wc.concept, split=wc.split,
            max_length_ratio=ooc["max_length_ratio"])
        pairs = pairs.head(ooc["splits"][wc.split])
    else:
        # The pairs are written by the organism (D.1: base + helpful-only adapter); a simulated
        # organism writes them from its policy, deterministic and fast: no response cache.
        if p.model["backend"] == "simulated":
            backend = local_backend(p.model, snakemake.input.model)
        else:
            backend = cached_local_backend(wc.model, runtime_spec(snakemake, wc.model, p.model),
                                           snakemake.input.model, p.hosted,
                                           adapter=snakemake.input.get("organism"))
        pairs, rejections = generate_ooc_pairs(
            backend, materials, concept=wc.concept, split=wc.split,
            n_pairs=ooc["splits"][wc.split], candidates_per_round=ooc["candidates_per_round"],
            max_rounds=ooc["max_rounds"], max_length_ratio=ooc["max_length_ratio"],
            temperature=ooc["temperature"], top_p=ooc["top_p"],
            max_tokens=ooc["max_tokens"], seed=ooc["seed"])
    log.info("rejections:\n%s", _text(rejections))
    log.info("kept %d of %d requested pairs (%s, %s)", len(pairs), ooc["splits"][wc.split],
             wc.concept, wc.split)
    if len(pairs) == 0:
        raise RuntimeError(
            f"no OOC pair for {wc.concept}/{wc.split} survived the filters in "
            f"{ooc['max_rounds']} rounds of {ooc['candidates_per_round']} candidates (see the "
            "rejection table in the log); raise steering.ooc.max_rounds or "
            "candidates_per_round, or check the model's output format")
    prov = job_provenance(snakemake, params=dict(p.items()))
    write_table(rejections, snakemake.output.rejections, prov)
    write_table(pairs, snakemake.output.pairs, prov)


def ic_pairs(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.rollouts.protocol import PromptSet
    from motivation_profiles.steering.ic import ic_pairs as build

    p, wc = snakemake.params, snakemake.wildcards
    ic = p.ic
    if p.external:
        from motivation_profiles.steering.pair_files import read_pair_file

        pairs = read_pair_file(snakemake.input.external, concept=wc.concept, source="ic",
                               split=None)
        report = pl.DataFrame({"source": ["external"], "pairs": [len(pairs)]},
                              schema={"source": pl.Utf8, "pairs": pl.Int64})
        prov = job_provenance(snakemake, params=dict(p.items()))
        write_table(report, snakemake.output.report, prov)
        write_table(pairs, snakemake.output.pairs, prov)
        return
    prompts = PromptSet.from_config(p.prompts)
    pairs, report = build(read_all(snakemake.input.rollouts),
                          read_all(snakemake.input.judged), prompts, concept=wc.concept,
                          high=ic["high"], low=ic["low"], quantiles=ic.get("quantiles"),
                          max_length_ratio=ic["max_length_ratio"], n_train=ic["n_train"],
                          n_validation=ic["n_validation"], selection=ic["selection"],
                          seed=ic["seed"])
    log.info("IC pairs for %s:\n%s", wc.concept, _text(report))
    prov = job_provenance(snakemake, params=dict(p.items()))
    write_table(report, snakemake.output.report, prov)
    write_table(pairs, snakemake.output.pairs, prov)


# ----------------------------------------------------------------------------- activations


def activations(snakemake: Any) -> None:
    import json

    from motivation_profiles.core.provenance import read_table, write_table

    p = snakemake.params
    ex = p.extraction
    pairs = read_table(snakemake.input.pairs)
    out = Path(snakemake.output[0])
    if p.model["backend"] == "simulated":  # the planted activations of its policy file
        from motivation_profiles.backends.simulated import Policy
        from motivation_profiles.steering.simulated_activations import (
            extract_simulated_activations,
        )

        spec = Policy.load(snakemake.input.model).steering
        if spec is None:
            raise ValueError(f"{snakemake.input.model}: a steered simulated model needs a "
                             "'steering' section in its policy (planted activations)")
        index = extract_simulated_activations(spec, pairs, out, shard_size=ex["shard_size"],
                                              max_length=ex["max_length"])
    else:
        from motivation_profiles.models.load import load_model
        from motivation_profiles.steering.activations import extract_activations

        model, tok = load_model(snakemake.input.model, dtype=p.model["dtype"],
                                device=p.model["device"],
                                adapter=snakemake.input.get("organism"))
        index = extract_activations(model, tok, pairs, out, batch_size=ex["batch_size"],
                                    shard_size=ex["shard_size"], max_length=ex["max_length"],
                                    max_batch_tokens=ex.get("max_batch_tokens"))
    prov = job_provenance(snakemake, params=dict(p.items()))
    (out / "provenance.json").write_text(json.dumps(prov, indent=1, sort_keys=True,
                                                    default=str))
    # The index is a Parquet table like every other: it carries the job_provenance too.
    write_table(index, out / "index.parquet", prov)
    log.info("%d rows (%d pairs) -> %s", len(index), index["pair_id"].n_unique(), out)


def _pos_neg(index: pl.DataFrame, acts: np.ndarray, split: str | None = None):
    """Aligned (pos, neg, pair_ids) arrays of one split (or all rows), pairs in the order of
    their pos rows; ``index["_pos"]`` is each row's position in ``acts``."""
    rows = index if split is None else index.filter(pl.col("split") == split)
    pos = rows.filter(pl.col("side") == "pos").select("pair_id", "_pos")
    neg = rows.filter(pl.col("side") == "neg").select("pair_id", pl.col("_pos").alias("_neg"))
    both = pos.join(neg, on="pair_id", how="inner", maintain_order="left")
    return (acts[both["_pos"].to_numpy()], acts[both["_neg"].to_numpy()],
            np.asarray(both["pair_id"].to_list()))


def _load_sets(dirs: list[str], pooling: str) -> tuple[pl.DataFrame, np.ndarray]:
    from motivation_profiles.steering.activation_cache import load_activations

    frames, arrays, offset = [], [], 0
    for d in dirs:
        index, acts = load_activations(d, pooling=pooling)
        frames.append(index.with_columns(
            pl.Series("_pos", np.arange(offset, offset + len(index), dtype=np.int64))))
        arrays.append(acts)
        offset += len(index)
    return pl.concat(frames, how="diagonal_relaxed"), np.concatenate(arrays, axis=0)


def _validation_sets(index: pl.DataFrame, acts: np.ndarray) -> dict[str, tuple]:
    out = {}
    for split in sorted(set(index["split"].to_list()) - {"train"}):
        pos, neg, _ = _pos_neg(index, acts, split)
        if len(pos):
            out[split] = (pos, neg)
    return out


def fit_vectors(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.steering.vectors import diagnostics, fit_directions, save_vectors

    p, wc = snakemake.params, snakemake.wildcards
    f = p.fitting
    index, acts = _load_sets(list(snakemake.input.activations), p.pooling)
    pos, neg, ids = _pos_neg(index, acts, "train")
    if len(pos) < f["min_pairs"]:
        raise RuntimeError(
            f"{wc.concept}_{wc.source}: {len(pos)} training pairs, fewer than "
            f"steering.fitting.min_pairs = {f['min_pairs']}; the pair files have too few "
            "usable pairs (see the ooc_pairs / ic_pairs logs)")
    vectors = fit_directions(pos, neg, estimator=f["estimator"], C=f["C"],
                             ridge_alpha=f["ridge_alpha"], scale=f["scale"], seed=f["seed"])
    folds = f["folds"] if len(pos) >= f["folds"] else None
    if folds is None:
        log.warning("%d training pairs < %d folds: cross-validation skipped", len(pos),
                    f["folds"])
    diag = diagnostics(pos, neg, ids, _validation_sets(index, acts), estimator=f["estimator"],
                       C=f["C"], ridge_alpha=f["ridge_alpha"], scale=f["scale"], folds=folds,
                       seed=f["seed"], vectors=None)
    diag = _with_front(diag, model=wc.model, vector=f"{wc.concept}_{wc.source}")
    log.info("diagnostics:\n%s", _text(diag))
    save_vectors(snakemake.output.vectors, vectors, {
        "name": f"{wc.concept}_{wc.source}", "concept": wc.concept, "source": wc.source,
        "estimator": f["estimator"], "pooling": p.pooling, "scale": f["scale"],
        "kind": "fitted", "seed": str(f["seed"]), "of": f"{wc.concept}_{wc.source}",
        "train_pairs": str(len(pos))})
    write_table(diag, snakemake.output.diagnostics, job_provenance(snakemake,
                                                                params=dict(p.items())))


def random_vectors(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.steering.vectors import (
        control_seed,
        diagnostics,
        load_vectors,
        random_controls,
        save_vectors,
    )

    p, wc = snakemake.params, snakemake.wildcards
    real, meta = load_vectors(snakemake.input.real)
    k = int(wc.k)
    # Control k of every vector is drawn from its own stream: a hash of seed, vector and k.
    seed = control_seed(p.seed, f"{wc.concept}_{wc.source}", k)
    vec = random_controls(real, n=1, seed=seed)[0]
    name = f"random_{wc.concept}_{wc.source}_{k}"
    if snakemake.input.activations:
        index, acts = _load_sets(list(snakemake.input.activations), p.pooling)
        val = _validation_sets(index, acts)
    else:
        val = {}
    diag = _with_front(diagnostics(None, None, None, val, vectors=vec), model=wc.model,
                       vector=name)
    save_vectors(snakemake.output.vectors, vec, {
        "name": name, "concept": wc.concept, "source": wc.source, "estimator": "random",
        "pooling": p.pooling, "scale": meta.get("scale", ""), "kind": "random",
        "seed": str(seed), "of": f"{wc.concept}_{wc.source}"})
    write_table(diag, snakemake.output.diagnostics, job_provenance(snakemake,
                                                                params=dict(p.items())))


def vector_norms(snakemake: Any) -> None:
    """Per-layer norm of every vector of a model (fitted and random controls), with the layers
    it is steered at marked, so multipliers compare across concepts (``scale: coef`` vectors
    have no common unit)."""
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.steering.vectors import load_vectors
    from motivation_profiles.steering.vectors import vector_norms as norms_of

    vectors = {}
    for path in snakemake.input.vectors:
        arr, meta = load_vectors(path)
        vectors[meta.get("name") or Path(path).name.removesuffix(".safetensors")] = (arr, meta)
    steered = read_table(snakemake.input.layers).filter("selected")["layer"].to_list()
    table = norms_of(vectors).with_columns(
        pl.col("layer").is_in(pl.Series(steered, dtype=pl.Int64).implode()).alias("steered"))
    table = table.insert_column(0, pl.lit(snakemake.wildcards.model, dtype=pl.Utf8)
                                .alias("model"))
    log.info("norms at the steered layers:\n%s",
             _text(table.filter("steered", pl.col("kind") == "fitted")))
    write_table(table, snakemake.output[0], job_provenance(snakemake))


def _layer_table(diag: pl.DataFrame, spec: dict[str, Any]) -> pl.DataFrame:
    """One row per layer: its mean ``spec["metric"]`` on ``spec["split"]`` over the tables in
    ``diag`` (NaN skipped; null where there is none), whether it is selected, and its rank by
    that score (ties in layer order; null without a score)."""
    from motivation_profiles.steering.vectors import select_layers

    n_layers = int(diag["layer"].max()) + 1
    if spec["select"] == "list":
        bad = [layer for layer in spec["list"] if layer >= n_layers]
        if bad:
            raise ValueError(f"steering.layers.list: layer(s) {bad} do not exist (the model "
                             f"has {n_layers} layers, 0..{n_layers - 1})")
        chosen = list(spec["list"])
    else:
        chosen = select_layers(diag, k=spec["k"], metric=spec["metric"], split=spec["split"])
    score = (diag.filter(pl.col("split") == spec["split"])
             .group_by(pl.col("layer").cast(pl.Int64))
             .agg(pl.col(spec["metric"]).cast(pl.Float64).fill_nan(None).mean().alias("score")))
    layers = pl.DataFrame({"layer": pl.Series(range(n_layers), dtype=pl.Int64)})
    return layers.join(score, on="layer", how="left", maintain_order="left").with_columns(
        pl.lit(spec["metric"], dtype=pl.Utf8).alias("metric"),
        pl.lit(spec["split"], dtype=pl.Utf8).alias("split"),
        pl.col("layer").is_in(pl.Series(chosen, dtype=pl.Int64).implode()).alias("selected"),
        pl.col("score").rank("ordinal", descending=True).cast(pl.Int64).alias("rank"))


def steering_layers(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table

    diag = read_all(snakemake.input.diagnostics)
    table = _layer_table(diag, dict(snakemake.params.layers))
    log.info("selected layers: %s", table.filter("selected")["layer"].to_list())
    write_table(table, snakemake.output[0],
                job_provenance(snakemake, params=dict(snakemake.params.items())))


# ----------------------------------------------------------------------------- evaluation


def judge_raw(snakemake: Any) -> None:
    from motivation_profiles.backends.anthropic import HostedBackend
    from motivation_profiles.backends.base import SamplingParams
    from motivation_profiles.backends.factory import anthropic_client, cached_local_backend
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.judge.compliance import ComplianceRubric, judge_compliance

    p = snakemake.params
    spec = p.judge
    rubric = ComplianceRubric.load(snakemake.input.rubric)
    if spec["backend"] == "local":
        backend = cached_local_backend(spec["model"],
                                       runtime_spec(snakemake, spec["model"], p.model),
                                       snakemake.input.model[0], p.hosted)
    else:
        backend = HostedBackend(anthropic_client(p.hosted), spec["model"])
    params = SamplingParams(temperature=spec["temperature"], top_p=spec["top_p"],
                            max_new_tokens=spec["max_tokens"])
    meta = {"judge_backend": spec["backend"], "judge_model": spec["model"],
            "rubric": rubric.name, "rubric_sha256": rubric.sha256, "samples": spec["samples"]}
    table = judge_compliance(read_table(snakemake.input.table), backend, rubric,
                             samples=spec["samples"], params=params, meta=meta)
    log.info("compliance: %s", dict(Counter(table["status"].to_list()).most_common()))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def steering_summary(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.metrics.steering import steering_summary as summarise

    table = summarise(read_all(snakemake.input.metrics), read_all(snakemake.input.judged),
                      high=snakemake.params.high)
    log.info("\n%s", _text(table))
    write_table(table, snakemake.output[0],
                job_provenance(snakemake, params=dict(snakemake.params.items())))


def raw_summary(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.metrics.steering import raw_summary as summarise

    table = summarise(read_all(snakemake.input.judged), level=snakemake.params.ci_level)
    log.info("\n%s", _text(table))
    write_table(table, snakemake.output[0],
                job_provenance(snakemake, params=dict(snakemake.params.items())))


def steering_profile(snakemake: Any) -> None:
    """Steering's S_A / S_B: each concept's vector at +m and -m as that family's amplify and
    suppress arms, against the unsteered baseline (profiles.parquet method "steering")."""
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.metrics.profiles import intervention_effects
    from motivation_profiles.steering.names import format_multiplier

    p = snakemake.params
    table = intervention_effects(read_all(snakemake.input.tables), baseline="baseline",
                                 interventions=dict(p.interventions), n_boot=p.bootstrap_samples,
                                 level=p.ci_level, seed=p.seed)
    table = _with_front(table, model=snakemake.wildcards.model, method="steering").with_columns(
        pl.lit(f"x{format_multiplier(p.multiplier)}").alias("strength"),
        pl.lit(p.source).alias("naming"))
    log.info("\n%s", _text(table))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def token_cosines(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.models.load import load_model
    from motivation_profiles.steering.analysis import token_cosines as cosines
    from motivation_profiles.steering.vectors import load_vectors, select_layers

    p = snakemake.params
    hm = p.heatmap
    diag = read_all(snakemake.input.diagnostics)
    layers = select_layers(diag, k=hm["top_layers"], metric=p.layers["metric"],
                           split=p.layers["split"])
    rollouts = read_table(snakemake.input.rollouts)
    answered = [(text or "").strip() != "" for text in rollouts["final_output"].to_list()]
    rows = rollouts.filter(pl.Series(answered, dtype=pl.Boolean)).head(hm["transcripts"])
    texts = [[{"role": "user", "content": str(r["goal"])},
              {"role": "assistant", "content": str(r["final_output"])}]
             for r in rows.iter_rows(named=True)]
    vectors = {}
    for f in snakemake.input.vectors:
        vec, meta = load_vectors(f)
        vectors[meta["name"]] = vec
    model, tok = load_model(snakemake.input.model, dtype=p.model["dtype"],
                            device=p.model["device"], adapter=snakemake.input.get("organism"))
    table = cosines(model, tok, texts, vectors, layers, max_tokens=hm["max_tokens"])
    table = _with_front(table, model=snakemake.wildcards.model).with_columns(
        pl.lit(",".join(map(str, layers))).alias("layers"))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))


def sdf_alignment(snakemake: Any) -> None:
    from motivation_profiles.core.provenance import write_table
    from motivation_profiles.steering.analysis import sdf_alignment as align
    from motivation_profiles.steering.vectors import load_vectors

    p = snakemake.params
    texts = [t.strip() for t in Path(snakemake.input.texts).read_text().splitlines()
             if t.strip()]
    vectors = {}
    for f in snakemake.input.vectors:
        vec, meta = load_vectors(f)
        vectors[meta["name"]] = vec
    branches = {Path(b).name: b for b in snakemake.input.branches}
    table = align(snakemake.input.model, snakemake.input.organism, branches, texts, vectors,
                  dtype=p.model["dtype"], device=p.model["device"],
                  n_boot=p.alignment["bootstrap_samples"], seed=p.alignment["seed"])
    table = _with_front(table, model=snakemake.wildcards.model)
    log.info("\n%s", _text(table))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))
