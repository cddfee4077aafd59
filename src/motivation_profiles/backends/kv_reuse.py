"""Per-row KV reuse for the transformers backend: the attention keys and values of token
sequences already computed in this process, kept so that a later call whose prompt starts with
the same tokens computes only the rest.

A rollout's next turn repeats its whole transcript so far, the forced-choice tag is scored
right after the last turn, and the judge asks about one scratchpad once per direction: without
reuse each of those prefills again every token before it (measured on the demo: the tag
scoring pass alone was a third of a rollouts job). With it, the keys and values of a row's
prompt and its generated tokens are kept after each call (``KVStore.put``), and a later
prompt reuses the longest stored run of tokens it starts with (``KVStore.match``). Causal
attention makes that exact up to floating point: the keys and values of the first ``n``
tokens depend on those tokens only (and on the steering, part of the key). What a row reuses
differs from recomputing it in the last bits only, as batching and padding already do
(``hf.GumbelSampler``).

Rows of one batch reuse runs of different lengths: ``batch_cache`` left-pads each row's keys
and values to the longest run, and the caller lays out its input ids to match
(``[pad] * (C - c) + run + [pad] * (W - n) + new``) with an attention mask that hides the
padding; positions come from the mask, so a reused run keeps the positions it was computed
at.

The store holds at most ``max_bytes`` of keys and values (least recently used runs are
dropped first; ``models.<m>.kv_reuse_gib``). Only plain ``DynamicCache`` layers can be cut
into rows and stacked: a model with sliding-window or other cache layers gets no reuse and
prefills every prompt in full (``supported``)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from motivation_profiles.backends.base import longest_common_prefix

log = logging.getLogger(__name__)


def supported(cache: Any) -> bool:
    """Whether every layer of ``cache`` is a plain growing ``DynamicLayer`` (keys and values
    ``[batch, heads, seq, dim]``, appended to), the only kind rows can be cut from and stacked."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


@dataclass
class Run:
    """A computed token run: its ids and, per layer, keys and values ``[heads, n, dim]``."""

    tokens: np.ndarray
    layers: list[tuple[Any, Any]]

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size()
                   for k, v in self.layers)


@dataclass
class KVStore:
    """Token runs whose keys and values are kept, keyed by what else shaped them (the
    steering); least recently used first out once ``max_bytes`` is passed."""

    max_bytes: int
    _runs: OrderedDict[tuple[Any, bytes], tuple[Any, Run]] = field(default_factory=OrderedDict)
    _bytes: int = 0

    @property
    def tokens(self) -> int:
        return sum(len(run) for _, run in self._runs.values())

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._runs)

    def match(self, ident: Any, ids: Sequence[int]) -> tuple[int, Run | None]:
        """The longest stored run (under ``ident``) that ``ids`` starts with, as (tokens shared,
        run), capped so that at least one token of ``ids`` is left to compute (its logits are
        the ones asked for). (0, None) when nothing is shared."""
        want = np.asarray(ids, dtype=np.int64)
        best, best_key = 0, None
        for key, (run_ident, run) in self._runs.items():
            if run_ident != ident:
                continue
            n = longest_common_prefix([run.tokens, want])
            if n > best:
                best, best_key = n, key
        best = min(best, len(want) - 1)
        if best <= 0 or best_key is None:
            return 0, None
        self._runs.move_to_end(best_key)
        return best, self._runs[best_key][1]

    def covers(self, ident: Any, ids: Sequence[int]) -> bool:
        """Whether some stored run (under ``ident``) starts with all of ``ids``."""
        want = np.asarray(ids, dtype=np.int64)
        return any(run_ident == ident and longest_common_prefix([run.tokens, want]) == len(want)
                   for run_ident, run in self._runs.values())

    def put(self, ident: Any, tokens: Sequence[int], layers: list[tuple[Any, Any]],
            force: bool = False) -> None:
        """Keep ``tokens``' keys and values (per layer ``[heads, len(tokens), dim]``). A run
        that an already stored one starts with is not kept twice, and a stored run that this one
        starts with is replaced. ``force``: kept even past ``max_bytes`` (alone then: a call's
        shared prefix, which its rows need whatever the budget)."""
        arr = np.asarray(tokens, dtype=np.int64)
        new = Run(arr, layers)
        if len(arr) == 0 or (new.nbytes > self.max_bytes and not force):
            return
        for key, (run_ident, run) in list(self._runs.items()):
            if run_ident != ident:
                continue
            shared = longest_common_prefix([run.tokens, arr])
            if shared == len(arr):        # already held, as this run or inside a longer one
                self._runs.move_to_end(key)
                return
            if shared == len(run):        # this run extends a stored one: it replaces it
                del self._runs[key]
                self._bytes -= run.nbytes
        self._runs[(ident, arr.tobytes())] = (ident, new)
        self._bytes += new.nbytes
        while self._bytes > self.max_bytes and len(self._runs) > 1:  # never the new run
            _, (_, old) = self._runs.popitem(last=False)
            self._bytes -= old.nbytes

    def clear(self) -> None:
        self._runs.clear()
        self._bytes = 0


def batch_cache(rows: Sequence[tuple[int, Run | None]], width: int, config: Any) -> Any:
    """A ``DynamicCache`` of ``width`` positions per row: row ``i``'s first ``n`` run tokens
    (``rows[i] = (n, run)``) right-aligned, zeros before them (hidden by the caller's attention
    mask)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    template = next(run for n, run in rows if n and run is not None)
    for li, (k0, v0) in enumerate(template.layers):
        ks, vs = [], []
        for n, run in rows:
            if n:
                k, v = run.layers[li]
                k, v = k[:, :n], v[:, :n]
            else:
                k = k0.new_zeros((k0.shape[0], 0, k0.shape[2]))
                v = v0.new_zeros((v0.shape[0], 0, v0.shape[2]))
            pad = width - k.shape[1]
            if pad:
                k = torch.cat([k.new_zeros((k.shape[0], pad, k.shape[2])), k], dim=1)
                v = torch.cat([v.new_zeros((v.shape[0], pad, v.shape[2])), v], dim=1)
            ks.append(k)
            vs.append(v)
        cache.update(torch.stack(ks), torch.stack(vs), li)
    return cache


def row_run(cache: Any, row: int, positions: Sequence[int], tokens: Sequence[int]) -> Run:
    """Row ``row``'s keys and values at ``positions`` of a batched cache, as the run of
    ``tokens`` (one token per position)."""
    import torch

    if len(positions) != len(tokens):
        raise ValueError(f"{len(positions)} cache positions for {len(tokens)} tokens")
    device = cache.layers[0].keys.device
    idx = torch.as_tensor(list(positions), dtype=torch.long, device=device)
    layers = [(layer.keys[row].index_select(1, idx), layer.values[row].index_select(1, idx))
              for layer in cache.layers]
    return Run(np.asarray(tokens, dtype=np.int64), layers)


# ------------------------------------------------------------------ shared prefixes on disk
def prefix_key(*, weights: str, steering: str | None, dtype: str, device: str,
               tokens: Sequence[int]) -> str:
    """The file name of a shared prefix's keys and values: a hash of everything they depend on
    (the weights and adapter, the steering, dtype, device type, torch and transformers
    versions) and of the tokens."""
    import torch
    import transformers

    body = json.dumps({"weights": weights, "steering": steering, "dtype": dtype,
                       "device": device, "torch": torch.__version__,
                       "transformers": transformers.__version__,
                       "tokens": [int(t) for t in tokens]}, sort_keys=True)
    return hashlib.sha256(b"motivation-profiles/kv-prefix/v1\0" + body.encode()).hexdigest()


def load_prefix(path: Any, n_tokens: int, device: Any) -> list[tuple[Any, Any]] | None:
    """A stored prefix's per-layer keys and values, or None when the file is missing or cannot
    be used (unreadable, other shapes: then a warning names it and the caller recomputes)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        return None
    try:
        tensors = load_file(path, device=str(device))
        n_layers = len(tensors) // 2
        layers = [(tensors[f"k{i}"], tensors[f"v{i}"]) for i in range(n_layers)]
        if not layers or any(k.shape[1] != n_tokens or v.shape[1] != n_tokens
                             for k, v in layers):
            raise ValueError(f"not {n_tokens} tokens of keys and values")
        return layers
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        log.warning("stored prefix %s is unusable (%s: %s); computing it again", path,
                    type(exc).__name__, exc)
        return None


def save_prefix(path: Any, layers: Sequence[tuple[Any, Any]]) -> None:
    """Write a prefix's per-layer keys and values atomically (a reader never sees half)."""
    from safetensors.torch import save_file

    from motivation_profiles.core.io import atomic_path

    tensors = {}
    for i, (k, v) in enumerate(layers):
        tensors[f"k{i}"], tensors[f"v{i}"] = k.contiguous(), v.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
