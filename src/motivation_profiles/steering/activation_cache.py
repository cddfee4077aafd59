"""Reading an activation cache (meta.json, index.parquet, safetensors shards) written by
:func:`motivation_profiles.steering.activations.extract_activations`. Needs no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl


def load_activations(directory: str | Path,
                     pooling: str = "response_mean") -> tuple[pl.DataFrame, np.ndarray]:
    """(index, activations [rows, L, d] float32 aligned with the index's row order)."""
    from safetensors import safe_open

    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    if pooling not in meta["pooling"]:
        raise ValueError(f"{directory}: pooling {pooling!r} not in the cache "
                         f"(has {meta['pooling']})")
    index = pl.read_parquet(directory / "index.parquet")
    acts = np.empty((len(index), int(meta["layers"]), int(meta["hidden_size"])),
                    dtype=np.float32)
    positions = np.arange(len(index))
    shards = np.asarray(index["shard"].to_list(), dtype=object)
    rows = index["row"].to_numpy()
    for shard in sorted(set(shards.tolist())):
        with safe_open(str(directory / shard), framework="numpy") as fh:
            tensor = fh.get_tensor(pooling)
        take = positions[shards == shard]
        acts[take] = tensor[rows[take]]
    return index, acts
