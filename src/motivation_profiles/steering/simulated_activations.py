"""Activation caches of a simulated organism, in the layout ``steering.activations`` writes.

Why this module exists: the steering chain must run on a simulated model exactly as on a real
one, so its activations come out in the same cache (``shard_*.safetensors`` with
``response_mean`` / ``span_mean`` [rows, L, d], ``index.parquet``, ``meta.json``; read by
``steering.activation_cache``) and everything downstream (fitting, diagnostics, layer choice,
random controls) is unchanged. The activations themselves are the planted ones of
``backends.simulated_steering``: a side's transcript is rendered as plain role-tagged text, its
words are the tokens, and the scratchpad loci and span are located as for a real model (a
missing locus or span is the same error).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.backends.simulated_steering import SteeringSpec
from motivation_profiles.core.io import built_in_place
from motivation_profiles.steering.activations import (
    INDEX_SCHEMA,
    POOLINGS,
    SIDES,
    _messages,
    _optional_str,
    _str_list,
)

log = logging.getLogger(__name__)


def render(messages: list[dict[str, str]]) -> tuple[str, int]:
    """(the transcript as role-tagged text, the char where the first assistant content
    starts; 0 without one)."""
    text, start = "", None
    for m in messages:
        text += f"<|{m.get('role', '')}|>\n"
        if m.get("role") == "assistant" and start is None:
            start = len(text)
        text += f"{m.get('content', '')}\n"
    return text, start or 0


def side_activations(spec: SteeringSpec, row: dict[str, Any], side: str, *,
                     max_length: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(response_mean [L, d], span_mean [L, d] (NaN without a span), index fields) of one side
    of a pairs-table row."""
    pair_id = str(row["pair_id"])
    where = f"pair {pair_id!r} side {side}"
    text, cursor = render(_messages(row[f"{side}_messages"], where))
    n_words = len(text.split())
    if n_words > max_length:
        raise ValueError(f"{where}: the transcript has {n_words} tokens, more than max_length "
                         f"{max_length}; raise steering.extraction.max_length")
    loci = _str_list(row[f"{side}_loci"])
    if not loci:
        raise ValueError(f"{where}: no scratchpad loci ({side}_loci is empty)")
    ranges = []
    for k, locus in enumerate(loci):
        at = text.find(locus, cursor)
        if at < 0:
            raise ValueError(f"{where}: locus {k} ({locus[:60]!r}...) not found in the "
                             f"transcript after char {cursor}")
        ranges.append((at, at + len(locus)))
        cursor = at + len(locus)
    span_text = _optional_str(row.get(f"{side}_span"))
    span = None
    if span_text is not None:
        span = next(((at, at + len(span_text)) for a, b in ranges
                     if (at := text.find(span_text, a, b)) >= 0), None)
        if span is None:
            raise ValueError(f"{where}: span {span_text[:60]!r} does not occur inside any "
                             "scratchpad locus")
    resp, span_mean, n_tokens, n_resp, n_span = spec.pooled(text, ranges, span)
    if n_resp == 0:
        raise ValueError(f"{where}: the scratchpad loci cover no token")
    fields = {"pair_id": pair_id, "side": side, "split": str(row.get("split", "")),
              "concept": str(row.get("concept", "")), "source": str(row.get("source", "")),
              "n_tokens": n_tokens, "response_tokens": n_resp, "span_tokens": n_span,
              "chars": sum(b - a for a, b in ranges)}
    return resp, span_mean, fields


def extract_simulated_activations(spec: SteeringSpec, pairs: pl.DataFrame,
                                  out_dir: str | Path, *, shard_size: int,
                                  max_length: int) -> pl.DataFrame:
    """The cache directory ``out_dir`` of every side of every pair (pairs in table order, pos
    before neg), as ``steering.activations.extract_activations`` writes it. Returns the index."""
    from safetensors.numpy import save_file

    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    out_dir = Path(out_dir)
    dup = pairs.filter(~pl.col("pair_id").is_first_distinct())["pair_id"].to_list()
    if dup:
        raise ValueError(f"pair_id values repeat in the pairs table: {dup[:5]}")
    sides = [side_activations(spec, row, side, max_length=max_length)
             for row in pairs.iter_rows(named=True) for side in SIDES]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    records = []
    n_shards = 0
    with built_in_place(out_dir) as partial:
        for s, first in enumerate(range(0, len(sides), shard_size)):
            chunk = sides[first:first + shard_size]
            shard = f"shard_{s:05d}.safetensors"
            save_file({"response_mean": np.stack([c[0] for c in chunk]).astype(np.float32),
                       "span_mean": np.stack([c[1] for c in chunk]).astype(np.float32)},
                      str(partial / shard),
                      metadata={"layers": str(spec.layers), "hidden_size": str(spec.width)})
            records += [{**c[2], "shard": shard, "row": j} for j, c in enumerate(chunk)]
            n_shards += 1
        index = pl.DataFrame(records, schema=INDEX_SCHEMA)
        index.write_parquet(partial / "index.parquet")
        meta = {"layers": spec.layers, "hidden_size": spec.width, "rows": len(sides),
                "pairs": len(pairs), "shards": n_shards, "shard_size": shard_size,
                "max_batch_tokens": None, "pooling": list(POOLINGS), "dtype": "float32",
                "model_dtype": "simulated", "model_manifest_sha256": None,
                "max_length": max_length,
                "layer": "planted residual layer l of the simulated organism "
                         "(backends/simulated_steering.py)"}
        (partial / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    log.info("%d rows (%d pairs, %d layers, d=%d, simulated) -> %s", len(sides), len(pairs),
             spec.layers, spec.width, out_dir)
    return index
