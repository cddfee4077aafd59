"""Residual-stream activations for steering: pooled caches, per-token cosines, SDF alignment.

Why this module exists: steering vectors are fitted on activations pooled over the scratchpad
of paired transcripts (``vectors.py``), the token heatmaps score single tokens against them, and
the SDF-alignment analysis asks whether an SDF adapter moves activations along them. All three
need the same thing from the model: the output of every decoder layer, reduced on the fly.

Layer ``l`` (0-based) is the OUTPUT of decoder layer ``l`` (``model.model.layers[l]``), the
tensor steering adds ``alpha * v_l`` to. For ``l < L - 1`` that is Hugging Face's
``hidden_states[l + 1]``; for the last layer HF's ``hidden_states[L]`` is after the final norm,
whereas this module (like steering) uses the layer's own, pre-norm, output.

Pooling happens inside forward hooks on the decoder layers: each hook multiplies the layer's
output by a [rows, poolings, tokens] mask (a batched matmul) and keeps only the [rows, poolings,
d] sums, so no per-layer [tokens, d] tensor outlives its layer's forward. Only the decoder runs
(``model.model(...)``): no [tokens, vocab] logits are built. Batches are right-padded with an
attention mask; padding never enters a mask.

Cache layout (``extract_activations``): ``shard_00000.safetensors`` ... with float32 tensors
``response_mean`` and ``span_mean`` [rows, L, d] (``span_mean`` is NaN where the side has no
span), ``index.parquet`` (one row per pair and side; ``n_tokens`` counts the whole rendered
transcript, ``response_tokens`` / ``span_tokens`` the pooled tokens, ``chars`` the characters of
the scratchpad loci) and ``meta.json``. The directory is built in a ``.{name}.partial``
sibling and renamed into place, so an interrupted job leaves nothing under the final name.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

POOLINGS = ("response_mean", "span_mean")
INDEX_COLUMNS = ["pair_id", "side", "split", "concept", "source", "shard", "row", "n_tokens",
                 "response_tokens", "span_tokens", "chars"]
SIDES = ("pos", "neg")


# ----------------------------------------------------------------------------- model access


def decoder_and_layers(model: Any) -> tuple[Any, Any]:
    """(decoder, its ModuleList of decoder layers) of a causal LM, through PEFT wrappers.

    ``decoder`` is the module whose forward runs embeddings, layers and final norm without the
    LM head (``LlamaForCausalLM.model``); LoRA layers injected by PEFT live inside it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base if hasattr(base, "layers") else getattr(base, "model", None)
    layers = getattr(decoder, "layers", None)
    if layers is None or not hasattr(layers, "__len__"):
        raise TypeError(f"cannot find the decoder layers of {type(model).__name__} (expected "
                        "a Hugging Face causal LM with `.model.layers`, or a PEFT wrapper of "
                        "one)")
    return decoder, layers


def _input_device(decoder: Any):
    return decoder.get_input_embeddings().weight.device


def _hidden_size(decoder: Any) -> int:
    return int(decoder.get_input_embeddings().weight.shape[1])


class _Pooler:
    """Forward hooks on every decoder layer computing ``masks @ output`` per row.

    ``masks`` is [B, K, T] (K poolings); after a forward, ``sums()`` is [B, K, L, d] float32 on
    the CPU. The hook reads the layer output (a tensor, or a tuple whose first element is the
    hidden state) and never modifies it. It writes into a preallocated [L, B, K, d] buffer
    (``out=``), so nothing is allocated between the layers' own transient tensors: small
    long-lived blocks there fragment the CPU heap and inflate peak memory with length."""

    def __init__(self, layers: Sequence[Any], hidden_size: int) -> None:
        self.layers = list(layers)
        self.hidden_size = hidden_size
        self._masks = None
        self._on_device: dict[Any, Any] = {}
        self._buffers: dict[Any, Any] = {}
        self._ran: list[Any] = [None] * len(self.layers)   # device each layer ran on
        self._handles: list[Any] = []

    def __enter__(self) -> _Pooler:
        for i, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._masks, self._on_device, self._buffers = None, {}, {}

    def _buffer(self, device):
        import torch

        b, k = self._masks.shape[:2]
        buf = self._buffers.get(device)
        if buf is None or buf.shape[1] < b or buf.shape[2] != k:
            buf = self._buffers[device] = torch.empty(
                (len(self.layers), max(b, 1), k, self.hidden_size), dtype=torch.float32,
                device=device)
        return buf

    def set_masks(self, masks, device=None) -> None:
        """Masks of the next forward; ``device``: where the first layers run (buffers are
        allocated there now, before the forward)."""
        import torch

        self._masks, self._on_device = masks.to(torch.float32), {}
        self._ran = [None] * len(self.layers)
        if device is not None:
            self._on_device[torch.device(device)] = self._masks.to(device)
            self._buffer(torch.device(device))

    def _hook(self, i: int):
        import torch

        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            m = self._on_device.get(h.device)
            if m is None:
                m = self._on_device[h.device] = self._masks.to(h.device)
            buf = self._buffer(h.device)
            torch.bmm(m, h.float(), out=buf[i, :m.shape[0]])
            self._ran[i] = h.device

        return hook

    def sums(self):
        """[B, K, L, d] float32 CPU copy of the last forward's sums."""
        import torch

        missing = [i for i, dev in enumerate(self._ran) if dev is None]
        if missing:
            raise RuntimeError(f"decoder layers {missing} did not run in the forward pass")
        b = self._masks.shape[0]
        return torch.stack([self._buffers[dev][i, :b].to("cpu")
                            for i, dev in enumerate(self._ran)], dim=2)


def _forward(decoder: Any, input_ids, attention_mask) -> None:
    dev = _input_device(decoder)
    decoder(input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev), use_cache=False)


def collate(seqs: Sequence[Sequence[int]], pad: int):
    """Right-padded [B, T] input ids and attention mask."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        attn[b, :len(s)] = 1
    return ids, attn


def pad_id(tokenizer: Any) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _progress(total: int, desc: str, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=not show, leave=False)


# ----------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedSide:
    """One side of one pair, tokenized, with its pooling masks (token positions)."""

    pair_id: str
    side: str
    split: str
    concept: str
    source: str
    input_ids: tuple[int, ...]
    response_positions: np.ndarray   # int positions of the loci's tokens
    span_positions: np.ndarray       # int positions of the span's tokens (empty: no span)
    chars: int                       # characters of the loci (what response_mean pools over)


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    msgs = json.loads(value) if isinstance(value, str) else value
    if not isinstance(msgs, (list, tuple)) or not all(isinstance(m, Mapping) for m in msgs):
        raise ValueError(f"{where}: messages must be a JSON list of {{role, content}} objects")
    return [dict(m) for m in msgs]


def _missing(value: Any) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _str_list(value: Any) -> list[str]:
    """A loci cell as a list of strings (list, array or tuple; a lone string is one locus)."""
    if _missing(value):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in list(value)]


def _optional_str(value: Any) -> str | None:
    if _missing(value):
        return None
    text = str(value)
    return text or None


def render(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[int], np.ndarray,
                                                                    int]:
    """(rendered text, token ids, [T, 2] char offsets, char where the first assistant message
    content starts; 0 when there is no assistant message)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("activation pooling needs a fast tokenizer (char offsets)")
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), None)
    start = 0
    if first is not None:
        prefix = (tokenizer.apply_chat_template(messages[:first], tokenize=False,
                                                add_generation_prompt=True) if first else "")
        if prefix and text.startswith(prefix):
            start = len(prefix)
        else:
            content = str(messages[first].get("content", ""))
            found = text.find(content) if content else -1
            start = max(found, 0)
    return text, list(enc["input_ids"]), offsets, start


def _positions(offsets: np.ndarray, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
    """Token positions whose char range overlaps any of ``ranges`` ([start, end))."""
    mask = np.zeros(len(offsets), dtype=bool)
    for a, b in ranges:
        mask |= (offsets[:, 0] < b) & (offsets[:, 1] > a)
    return np.flatnonzero(mask)


def encode_side(tokenizer: Any, row: Mapping[str, Any], side: str, *,
                max_length: int) -> EncodedSide:
    """Render and tokenize one side of a pairs-table row and locate its loci and span.

    Raises ValueError naming the pair and side when a locus or the span cannot be found, when
    the loci cover no token, or when the transcript is longer than ``max_length`` tokens."""
    pair_id = str(row["pair_id"])
    where = f"pair {pair_id!r} side {side}"
    msgs = _messages(row[f"{side}_messages"], where)
    text, ids, offsets, cursor = render(tokenizer, msgs)
    if len(ids) > max_length:
        raise ValueError(f"{where}: the transcript has {len(ids)} tokens, more than max_length "
                         f"{max_length}; raise steering.extraction.max_length (it is never "
                         "truncated, which would drop the scratchpad)")
    loci = _str_list(row[f"{side}_loci"])
    if not loci:
        raise ValueError(f"{where}: no scratchpad loci ({side}_loci is empty)")
    ranges: list[tuple[int, int]] = []
    for k, locus in enumerate(loci):
        at = text.find(locus, cursor)
        if at < 0:
            raise ValueError(f"{where}: locus {k} ({locus[:60]!r}...) not found in the rendered "
                             f"transcript after char {cursor} (the first assistant content or "
                             "the previous locus)")
        ranges.append((at, at + len(locus)))
        cursor = at + len(locus)
    response = _positions(offsets, ranges)
    if len(response) == 0:
        raise ValueError(f"{where}: the scratchpad loci cover no token")
    span = _optional_str(row.get(f"{side}_span"))
    span_pos = np.zeros(0, dtype=np.int64)
    if span is not None:
        hit = next(((at, at + len(span)) for a, b in ranges
                    if (at := text.find(span, a, b)) >= 0), None)
        if hit is None:
            raise ValueError(f"{where}: span {span[:60]!r} does not occur inside any "
                             "scratchpad locus")
        span_pos = _positions(offsets, [hit])
    return EncodedSide(pair_id=pair_id, side=side, split=str(row.get("split", "")),
                       concept=str(row.get("concept", "")), source=str(row.get("source", "")),
                       input_ids=tuple(ids), response_positions=response,
                       span_positions=span_pos, chars=sum(b - a for a, b in ranges))


def encode_pairs(tokenizer: Any, pairs: pd.DataFrame, *, max_length: int) -> list[EncodedSide]:
    """Every side of every pair, in index order (pairs in table order, pos then neg)."""
    need = {"pair_id", "pos_messages", "neg_messages", "pos_loci", "neg_loci"}
    missing = sorted(need - set(pairs.columns))
    if missing:
        raise ValueError(f"pairs table lacks columns {missing}")
    dup = pairs["pair_id"][pairs["pair_id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"pair_id values repeat in the pairs table: {dup[:5]}")
    return [encode_side(tokenizer, row, side, max_length=max_length)
            for row in pairs.to_dict("records") for side in SIDES]


def plan_batches(lengths: Sequence[int], *, batch_size: int, shard_size: int,
                 max_batch_tokens: int | None = None) -> list[list[list[int]]]:
    """Per shard (consecutive ``shard_size`` rows), its batches of row indices: longest first
    within the shard (less padding), ties in row order. A batch holds at most ``batch_size``
    rows and, with ``max_batch_tokens``, at most that many padded tokens (rows x longest row;
    a row longer than the budget is a batch of its own), so the forward's working memory does
    not grow with transcript length. Deterministic."""
    if batch_size < 1 or shard_size < 1:
        raise ValueError("batch_size and shard_size must be >= 1")
    if max_batch_tokens is not None and max_batch_tokens < 1:
        raise ValueError("max_batch_tokens must be >= 1 (or None)")
    shards = []
    for start in range(0, len(lengths), shard_size):
        rows = sorted(range(start, min(len(lengths), start + shard_size)),
                      key=lambda i: (-lengths[i], i))
        batches: list[list[int]] = []
        for i in rows:
            cur = batches[-1] if batches else None
            if (cur is not None and len(cur) < batch_size
                    and (max_batch_tokens is None
                         or (len(cur) + 1) * lengths[cur[0]] <= max_batch_tokens)):
                cur.append(i)
            else:
                batches.append([i])
        shards.append(batches)
    return shards


# ----------------------------------------------------------------------------- extraction


def _model_manifest_hash(model: Any) -> str | None:
    from .provenance import MANIFEST, sha256_file

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    path = getattr(getattr(base, "config", None), "_name_or_path", None)
    if path and (Path(path) / MANIFEST).is_file():
        return sha256_file(Path(path) / MANIFEST)
    return None


def _model_dtype(decoder: Any) -> str:
    return str(decoder.get_input_embeddings().weight.dtype).removeprefix("torch.")


def extract_activations(model: Any, tokenizer: Any, pairs: pd.DataFrame, out_dir: str | Path, *,
                        batch_size: int, shard_size: int, max_length: int,
                        max_batch_tokens: int | None = None,
                        show_progress: bool = True) -> pd.DataFrame:
    """Pool every decoder layer's output over each side's scratchpad (``response_mean``) and
    annotated span (``span_mean``) and write the cache directory ``out_dir``.

    Every row is encoded and validated before the first forward pass (a missing locus or a
    too-long transcript fails fast, naming the pair and side). Batches hold at most
    ``batch_size`` rows and, with ``max_batch_tokens``, at most that many padded tokens (see
    ``plan_batches``: bounded peak memory for long transcripts). Returns the index (one row per
    pair and side, pairs in table order, pos before neg)."""
    import torch
    from safetensors.numpy import save_file

    out_dir = Path(out_dir)
    rows = encode_pairs(tokenizer, pairs, max_length=max_length)
    decoder, layers = decoder_and_layers(model)
    n_layers, d = len(layers), _hidden_size(decoder)
    plan = plan_batches([len(r.input_ids) for r in rows], batch_size=batch_size,
                        shard_size=shard_size, max_batch_tokens=max_batch_tokens)
    pad = pad_id(tokenizer)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    records = []
    try:
        with (torch.inference_mode(), _Pooler(layers, d) as pooler,
              _progress(len(rows), f"activations {out_dir.name}", show_progress) as bar):
            for s, batches in enumerate(plan):
                shard = f"shard_{s:05d}.safetensors"
                first = s * shard_size
                n = sum(len(b) for b in batches)
                resp = np.full((n, n_layers, d), np.nan, dtype=np.float32)
                span = np.full((n, n_layers, d), np.nan, dtype=np.float32)
                for batch in batches:
                    ids, attn = collate([rows[i].input_ids for i in batch], pad)
                    masks = torch.zeros((len(batch), 2, ids.shape[1]), dtype=torch.float32)
                    for b, i in enumerate(batch):
                        masks[b, 0, torch.as_tensor(rows[i].response_positions)] = 1.0
                        masks[b, 1, torch.as_tensor(rows[i].span_positions)] = 1.0
                    pooler.set_masks(masks, _input_device(decoder))
                    _forward(decoder, ids, attn)
                    sums = pooler.sums().numpy()              # [B, 2, L, d]
                    counts = masks.sum(dim=2).numpy()         # [B, 2]
                    for b, i in enumerate(batch):
                        resp[i - first] = sums[b, 0] / counts[b, 0]
                        if counts[b, 1] > 0:
                            span[i - first] = sums[b, 1] / counts[b, 1]
                    del sums, ids, attn, masks  # nothing of this batch lives into the next
                    bar.update(len(batch))
                save_file({"response_mean": resp, "span_mean": span}, str(partial / shard),
                          metadata={"layers": str(n_layers), "hidden_size": str(d)})
                for j in range(n):
                    r = rows[first + j]
                    records.append({
                        "pair_id": r.pair_id, "side": r.side, "split": r.split,
                        "concept": r.concept, "source": r.source, "shard": shard, "row": j,
                        "n_tokens": len(r.input_ids),
                        "response_tokens": len(r.response_positions),
                        "span_tokens": len(r.span_positions), "chars": r.chars})
        index = pd.DataFrame(records, columns=INDEX_COLUMNS)
        for col in ("row", "n_tokens", "response_tokens", "span_tokens", "chars"):
            index[col] = index[col].astype("int64")
        index.to_parquet(partial / "index.parquet", index=False)
        meta = {"layers": n_layers, "hidden_size": d, "rows": len(rows),
                "pairs": len(pairs), "shards": len(plan), "shard_size": shard_size,
                "max_batch_tokens": max_batch_tokens,
                "pooling": list(POOLINGS), "dtype": "float32",
                "model_dtype": _model_dtype(decoder),
                "model_manifest_sha256": _model_manifest_hash(model),
                "max_length": max_length,
                "layer": "output of decoder layer l (model.model.layers[l]), before the final "
                         "norm"}
        (partial / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(partial, out_dir)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    log.info("%d rows (%d pairs, %d layers, d=%d) -> %s", len(rows), len(pairs), n_layers, d,
             out_dir)
    return index


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


# ----------------------------------------------------------------------------- token cosines


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
                  max_tokens: int) -> pd.DataFrame:
    """Per transcript and scored token: the cosine between the token's activation and each
    vector, averaged over ``layers``.

    ``texts`` are plain strings (every token scored) or chat message lists (the assistant
    contents' tokens are scored, in the chat-template rendering); the first ``max_tokens``
    scored tokens of each. Columns ``transcript`` (index in ``texts``), ``position`` (index of
    the token among the scored ones), ``token`` (its decoded text), ``vector``, ``cosine``.
    A zero vector at a layer gives NaN."""
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
    return pd.DataFrame(rows, columns=["transcript", "position", "token", "vector", "cosine"])


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
    from .models import load_model

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
                  show_progress: bool = False) -> pd.DataFrame:
    """Does an SDF adapter move activations along a steering vector?

    Loads the base model with the organism adapter (None: the bare base model) and then with
    each branch adapter, one at a time. Per text and layer it takes the mean activation over
    the text's tokens, the per-text difference branch - organism, and the mean of those
    differences over texts (each text weighs the same); the row's ``cosine`` is that mean
    difference's cosine with ``v_l``. CI: percentile bootstrap over texts (resample texts with
    replacement, recompute the mean difference and its cosine), ``n_boot`` draws, ``seed``.
    Columns ``branch``, ``vector``, ``layer``, ``cosine``, ``ci_low``, ``ci_high``,
    ``ci_level``, ``n_texts``, ``diff_norm`` (norm of the mean difference); rows sorted by
    branch, vector, layer."""
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
    out = pd.DataFrame(rows, columns=["branch", "vector", "layer", "cosine", "ci_low", "ci_high",
                                      "ci_level", "n_texts", "diff_norm"])
    return out.sort_values(["branch", "vector", "layer"], kind="mergesort",
                           ignore_index=True)


__all__ = ["POOLINGS", "INDEX_COLUMNS", "EncodedSide", "decoder_and_layers", "render", "collate",
           "pad_id", "encode_side", "encode_pairs", "plan_batches", "extract_activations",
           "load_activations", "token_cosines", "text_means", "sdf_alignment"]
