"""What a steered rollout adds: a :class:`~motivation_profiles.models.hooks.Steering` built
from a fitted vector file and the model's selected layers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from motivation_profiles.models.hooks import Steering
from motivation_profiles.steering.vectors import load_vectors


def load_steering(path: str | Path, layers: Sequence[int], multiplier: float) -> Steering:
    """A :class:`Steering` from the rows ``layers`` of the ``[L, d]`` tensor ``vectors`` in a
    safetensors file (as :func:`save_vectors` writes it)."""
    arr, _ = load_vectors(path)
    bad = [int(layer) for layer in layers if not 0 <= int(layer) < arr.shape[0]]
    if bad:
        raise ValueError(f"{path}: layers {bad} out of range; the vector file has "
                         f"{arr.shape[0]} layers")
    return Steering({int(layer): arr[int(layer)] for layer in layers}, float(multiplier),
                    source=str(path))


def read_selected_layers(path: str | Path) -> list[int]:
    """The layers marked ``selected`` in a model's ``layers.parquet`` (rule steering_layers)."""
    from motivation_profiles.core.provenance import read_table

    t = read_table(path)
    return sorted(int(x) for x in t.filter(t["selected"])["layer"].to_list())
