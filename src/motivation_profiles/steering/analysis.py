"""Activation analyses beyond fitting: per-token cosines with a vector, SDF-adapter alignment."""

from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.models.layers import _hidden_size, _input_device, decoder_and_layers
from motivation_profiles.steering.activations import (
    _forward,
    _messages,
    _Pooler,
    _positions,
    _progress,
    collate,
    pad_id,
    plan_batches,
    render,
)

# ----------------------------------------------------------------------------- token cosines


TOKEN_COSINE_SCHEMA: dict[str, pl.DataType] = {
    "transcript": pl.Int64, "position": pl.Int64, "token": pl.Utf8, "vector": pl.Utf8,
    "cosine": pl.Float64}


ALIGNMENT_SCHEMA: dict[str, pl.DataType] = {
    "branch": pl.Utf8, "vector": pl.Utf8, "layer": pl.Int64, "cosine": pl.Float64,
    "ci_low": pl.Float64, "ci_high": pl.Float64, "ci_level": pl.Float64, "n_texts": pl.Int64,
    "diff_norm": pl.Float64}


def _check_vectors(vectors: Mapping[str, np.ndarray], n_layers: int, d: int) -> None:
    for name, v in vectors.items():
        if np.shape(v) != (n_layers, d):
            raise ValueError(f"vector {name!r} has shape {np.shape(v)}; the model needs "
                             f"[{n_layers}, {d}]")


def _scored_tokens(tokenizer: Any, item: Any, max_tokens: int) -> tuple[list[int], np.ndarray]:
    """(input ids up to the last scored token, scored positions): a message list scores the
    tokens of its assistant contents, a plain string all its text tokens; at most
    ``max_tokens`` of them, from the start."""
    if isinstance(item, str):
        enc = tokenizer(item, return_offsets_mapping=True)
        offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
        ids = list(enc["input_ids"])
        pos = np.flatnonzero(offsets[:, 1] > offsets[:, 0])
    else:
        msgs = _messages(item, "token_cosines transcript")
        text, ids, offsets, cursor = render(tokenizer, msgs)
        ranges = []
        for m in msgs:
            content = str(m.get("content", ""))
            if m.get("role") != "assistant" or not content:
                continue
            at = text.find(content, cursor)
            if at >= 0:
                ranges.append((at, at + len(content)))
                cursor = at + len(content)
        pos = _positions(offsets, ranges) if ranges else np.arange(len(ids))
    pos = pos[:max_tokens]
    return ids[:int(pos[-1]) + 1] if len(pos) else [], pos


def token_cosines(model: Any, tokenizer: Any, texts: Sequence[str | Sequence[Mapping[str, str]]],
                  vectors: Mapping[str, np.ndarray], layers: Sequence[int], *,
                  max_tokens: int) -> pl.DataFrame:
    """Per transcript and scored token: the cosine between the token's activation and each
    vector, averaged over ``layers``.

    ``texts`` are plain strings (every token scored) or chat message lists (the assistant
    contents' tokens are scored, in the chat-template rendering); the first ``max_tokens``
    scored tokens of each. Columns ``transcript`` (index in ``texts``), ``position`` (index of
    the token among the scored ones), ``token`` (its decoded text), ``vector``, ``cosine``.
    A zero vector at a layer gives a null cosine."""
    import torch

    decoder, dec_layers = decoder_and_layers(model)
    n_layers, d = len(dec_layers), _hidden_size(decoder)
    _check_vectors(vectors, n_layers, d)
    layers = sorted({int(x) for x in layers})
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise ValueError(f"layers {layers} must be a non-empty subset of 0..{n_layers - 1}")
    names = sorted(vectors)
    if not names:
        raise ValueError("token_cosines needs at least one vector")
    stacked = {layer: torch.as_tensor(np.stack([np.asarray(vectors[n][layer], np.float32)
                                                for n in names])) for layer in layers}
    rows: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    def hook_for(layer: int):
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            x = h[0, state["pos"].to(h.device)].float()                    # [S, d]
            v = stacked[layer].to(h.device)                                     # [V, d]
            den = x.norm(dim=1, keepdim=True) * v.norm(dim=1)[None, :]
            cos = torch.where(den > 0, (x @ v.T) / den.clamp_min(1e-30),
                              torch.full_like(den, float("nan")))
            state["sum"] = state["sum"] + cos.cpu()
        return hook

    handles = []
    try:
        for layer in layers:
            handles.append(dec_layers[layer].register_forward_hook(hook_for(layer)))
        with torch.inference_mode():
            for t, item in enumerate(texts):
                ids, pos = _scored_tokens(tokenizer, item, max_tokens)
                if not len(pos):
                    continue
                state["pos"] = torch.as_tensor(pos)
                state["sum"] = torch.zeros((len(pos), len(names)))
                input_ids = torch.as_tensor([ids])
                _forward(decoder, input_ids, torch.ones_like(input_ids))
                mean = (state["sum"] / len(layers)).numpy()
                for j, p in enumerate(pos):
                    token = tokenizer.decode([ids[int(p)]])
                    for k, name in enumerate(names):
                        rows.append({"transcript": t, "position": j, "token": token,
                                     "vector": name, "cosine": float(mean[j, k])})
    finally:
        for h in handles:
            h.remove()
    return pl.DataFrame(rows, schema=TOKEN_COSINE_SCHEMA).with_columns(
        pl.col("cosine").fill_nan(None))


# ----------------------------------------------------------------------------- SDF alignment


def text_means(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 4,
               max_length: int = 4096, show_progress: bool = False) -> np.ndarray:
    """Per text, the mean of every decoder layer's output over the text's tokens:
    [n_texts, L, d] float32 (tokenized with the tokenizer's default special tokens)."""
    import torch

    decoder, layers = decoder_and_layers(model)
    n_layers, d = len(layers), _hidden_size(decoder)
    encoded = [list(tokenizer(t)["input_ids"]) for t in texts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"text {i} has no tokens")
        if len(ids) > max_length:
            raise ValueError(f"text {i} has {len(ids)} tokens, more than max_length "
                             f"{max_length}")
    out = np.empty((len(texts), n_layers, d), dtype=np.float32)
    (batches,) = plan_batches([len(e) for e in encoded], batch_size=batch_size,
                              shard_size=max(len(encoded), 1)) or [[]]
    pad = pad_id(tokenizer)
    with (torch.inference_mode(), _Pooler(layers, d) as pooler,
          _progress(len(texts), "text means", show_progress) as bar):
        for batch in batches:
            ids, attn = collate([encoded[i] for i in batch], pad)
            masks = attn[:, None, :].to(torch.float32)
            pooler.set_masks(masks, _input_device(decoder))
            _forward(decoder, ids, attn)
            sums = pooler.sums().numpy()[:, 0]                 # [B, L, d]
            counts = masks.sum(dim=2).numpy()                  # [B, 1]
            for b, i in enumerate(batch):
                out[i] = sums[b] / counts[b, 0]
            del sums, ids, attn, masks
            bar.update(len(batch))
    return out


@contextlib.contextmanager
def _loaded(model_dir: str | Path, adapter: str | Path | None, dtype: str,
            device: str) -> Iterator[tuple[Any, Any]]:
    from motivation_profiles.models.load import load_model

    model, tok = load_model(model_dir, dtype=dtype, device=device, adapter=adapter)
    try:
        yield model, tok
    finally:
        del model
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _cosines(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Row-wise cosine of x [..., d] with v [d]; NaN where either norm is 0."""
    den = np.linalg.norm(x, axis=-1) * np.linalg.norm(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x @ v) / np.where(den > 0, den, 1.0), np.nan)


def sdf_alignment(model_dir: str | Path, organism_adapter: str | Path | None,
                  branch_adapters: Mapping[str, str | Path | None], texts: Sequence[str],
                  vectors: Mapping[str, np.ndarray], *, dtype: str = "float32",
                  device: str = "cpu", n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                  batch_size: int = 4, max_length: int = 4096,
                  show_progress: bool = False) -> pl.DataFrame:
    """Does an SDF adapter move activations along a steering vector?

    Loads the base model with the organism adapter (None: the bare base model) and then with
    each branch adapter, one at a time. Per text and layer it takes the mean activation over
    the text's tokens, the per-text difference branch - organism, and the mean of those
    differences over texts (each text weighs the same); the row's ``cosine`` is that mean
    difference's cosine with ``v_l``. CI: percentile bootstrap over texts (resample texts with
    replacement, recompute the mean difference and its cosine), ``n_boot`` draws, ``seed``.
    Columns ``branch``, ``vector``, ``layer``, ``cosine``, ``ci_low``, ``ci_high``,
    ``ci_level``, ``n_texts``, ``diff_norm`` (norm of the mean difference); rows sorted by
    branch, vector, layer. An undefined cosine or CI (a zero vector or difference) is null."""
    texts = list(texts)
    if not texts:
        raise ValueError("sdf_alignment needs at least one text")
    if not branch_adapters:
        raise ValueError("sdf_alignment needs at least one branch adapter")
    if not 0 < level < 1:
        raise ValueError(f"level {level} must be in (0, 1)")
    names = sorted(vectors)

    def means(adapter: str | Path | None) -> np.ndarray:
        with _loaded(model_dir, adapter, dtype, device) as (model, tok):
            decoder, layers = decoder_and_layers(model)
            _check_vectors(vectors, len(layers), _hidden_size(decoder))
            return text_means(model, tok, texts, batch_size=batch_size, max_length=max_length,
                              show_progress=show_progress)

    organism = means(organism_adapter).astype(np.float64)
    n, n_layers, _ = organism.shape
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    weights = np.stack([np.bincount(r, minlength=n) for r in draws]).astype(np.float64) / n
    q = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    rows = []
    for branch in sorted(branch_adapters):
        diff = means(branch_adapters[branch]).astype(np.float64) - organism   # [n, L, d]
        for layer in range(n_layers):
            mean = diff[:, layer].mean(axis=0)
            boot = weights @ diff[:, layer]                                  # [n_boot, d]
            for name in names:
                v = np.asarray(vectors[name][layer], dtype=np.float64)
                cos = float(_cosines(mean, v))
                bc = _cosines(boot, v)
                lo, hi = ((float(x) for x in np.nanpercentile(bc, q)) if np.isfinite(bc).any()
                          else (math.nan, math.nan))
                rows.append({"branch": branch, "vector": name, "layer": layer, "cosine": cos,
                             "ci_low": lo, "ci_high": hi, "ci_level": level, "n_texts": n,
                             "diff_norm": float(np.linalg.norm(mean))})
    out = pl.DataFrame(rows, schema=ALIGNMENT_SCHEMA).with_columns(
        pl.col(pl.Float64).fill_nan(None))
    return out.sort(["branch", "vector", "layer"], maintain_order=True)
