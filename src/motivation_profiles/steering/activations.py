"""Residual-stream activations for steering: encoding pairs and extracting pooled caches.

Why this module exists: steering vectors are fitted on activations pooled over the scratchpad
of paired transcripts (``steering.vectors``); the token heatmaps and the SDF-alignment
analysis (``steering.analysis``) score activations against them. All need the same thing from
the model: the output of every decoder layer, reduced on the fly. Reading a cache back is
``steering.activation_cache`` (no torch needed).

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

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.core.io import built_in_place
from motivation_profiles.models.layers import _hidden_size, _input_device, decoder_and_layers

log = logging.getLogger(__name__)


POOLINGS = ("response_mean", "span_mean")


INDEX_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.Utf8, "side": pl.Utf8, "split": pl.Utf8, "concept": pl.Utf8,
    "source": pl.Utf8, "shard": pl.Utf8, "row": pl.Int64, "n_tokens": pl.Int64,
    "response_tokens": pl.Int64, "span_tokens": pl.Int64, "chars": pl.Int64}


INDEX_COLUMNS = list(INDEX_SCHEMA)


SIDES = ("pos", "neg")


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
    """A messages cell: a list of {role, content} (a list-of-struct column), or its JSON string
    (older tables)."""
    msgs = json.loads(value) if isinstance(value, str) else value
    if not isinstance(msgs, (list, tuple)) or not all(isinstance(m, Mapping) for m in msgs):
        raise ValueError(f"{where}: messages must be a JSON list of {{role, content}} objects")
    return [dict(m) for m in msgs]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


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


def encode_pairs(tokenizer: Any, pairs: pl.DataFrame, *, max_length: int) -> list[EncodedSide]:
    """Every side of every pair, in index order (pairs in table order, pos then neg)."""
    need = {"pair_id", "pos_messages", "neg_messages", "pos_loci", "neg_loci"}
    missing = sorted(need - set(pairs.columns))
    if missing:
        raise ValueError(f"pairs table lacks columns {missing}")
    dup = pairs.filter(~pl.col("pair_id").is_first_distinct())["pair_id"].to_list()
    if dup:
        raise ValueError(f"pair_id values repeat in the pairs table: {dup[:5]}")
    return [encode_side(tokenizer, row, side, max_length=max_length)
            for row in pairs.iter_rows(named=True) for side in SIDES]


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
    from motivation_profiles.core.hashing import sha256_file
    from motivation_profiles.core.provenance import MANIFEST

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    path = getattr(getattr(base, "config", None), "_name_or_path", None)
    if path and (Path(path) / MANIFEST).is_file():
        return sha256_file(Path(path) / MANIFEST)
    return None


def _model_dtype(decoder: Any) -> str:
    return str(decoder.get_input_embeddings().weight.dtype).removeprefix("torch.")


def extract_activations(model: Any, tokenizer: Any, pairs: pl.DataFrame, out_dir: str | Path, *,
                        batch_size: int, shard_size: int, max_length: int,
                        max_batch_tokens: int | None = None,
                        show_progress: bool = True) -> pl.DataFrame:
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
    records = []
    with built_in_place(out_dir) as partial:
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
        index = pl.DataFrame(records, schema=INDEX_SCHEMA)
        index.write_parquet(partial / "index.parquet")
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
    log.info("%d rows (%d pairs, %d layers, d=%d) -> %s", len(rows), len(pairs), n_layers, d,
             out_dir)
    return index


