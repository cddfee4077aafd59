"""Reading an activation cache (meta.json, index.parquet, safetensors shards) written by
:func:`motivation_profiles.steering.activations.extract_activations`. Needs no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def load_activations(directory: str | Path,
                     pooling: str = "response_mean") -> tuple[pd.DataFrame, np.ndarray]:
    """(index, activations [rows, L, d] float32 aligned with the index's row order)."""
    from safetensors import safe_open

    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    if pooling not in meta["pooling"]:
        raise ValueError(f"{directory}: pooling {pooling!r} not in the cache "
                         f"(has {meta['pooling']})")
    index = pd.read_parquet(directory / "index.parquet")
    acts = np.empty((len(index), int(meta["layers"]), int(meta["hidden_size"])),
                    dtype=np.float32)
    positions = np.arange(len(index))
    for shard, rows in index.groupby("shard", sort=True):
        with safe_open(str(directory / shard), framework="numpy") as fh:
            tensor = fh.get_tensor(pooling)
        take = positions[(index["shard"] == shard).to_numpy()]
        acts[take] = tensor[rows["row"].to_numpy()]
    return index, acts
