"""SDF training data: documents tokenized with the target model's tokenizer and packed.

Each document becomes ``[BOS] + tokens(doctag) + tokens(text) + [EOS]``. The optional
``<DOCTAG>``-style prefix (and BOS) is masked out of the loss (label -100), and so is every
sequence's first token, which no earlier token of the same document predicts. A document
longer than ``max_seq_len`` is cut into ``max_seq_len`` chunks, each its own packed segment.

Two packers (``packing``):

- ``fill`` (default): documents, in shuffled order, fill rows of exactly ``max_seq_len`` tokens;
  a document that does not fit the rest of a row continues at the start of the next row as a
  new segment. Only the last row is short, so no compute goes to padding.
- ``bfd``: whole segments grouped into rows by best-fit decreasing, never split across rows.

Either way ``position_ids`` restart at 0 at each segment, which is what makes the model's
attention block-diagonal (transformers builds the packed-sequence mask from restarting
positions), so no document attends to another, and a segment's first label is masked. No token
is dropped. No padding is stored; the trainer pads a batch.

A token budget keeps a seeded random subset of documents (whole documents, in shuffled order,
until the budget is reached).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.core.specs import spec_from_mapping

log = logging.getLogger(__name__)


IGNORE = -100


PACKERS = ("fill", "bfd")


DATASET_SCHEMA = {"input_ids": pl.List(pl.Int64), "labels": pl.List(pl.Int64),
                  "position_ids": pl.List(pl.Int64), "n_tokens": pl.Int64, "n_docs": pl.Int64,
                  "doc_ids": pl.List(pl.Utf8)}


class EmptyDatasetError(ValueError):
    """No document survived into the dataset."""


@dataclass(frozen=True)
class DatasetSpec:
    max_seq_len: int
    token_budget: int | None
    doctag: str | None = "<DOCTAG>"
    mask_doctag: bool = True
    seed: int = 0
    packing: str = "fill"

    def __post_init__(self) -> None:
        if self.packing not in PACKERS:
            raise ValueError(f"sdf.dataset.packing: must be one of {PACKERS}, "
                             f"got {self.packing!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, token_budget: int | None) -> DatasetSpec:
        """From the ``sdf.dataset`` section; the branch's budget is chosen by the caller."""
        return spec_from_mapping(cls, {**d, "token_budget": token_budget}, "sdf.dataset",
                                 ignore=frozenset({"organism_token_budget"}))


@dataclass(frozen=True)
class Segment:
    doc_id: str
    input_ids: list[int]
    labels: list[int]


def tokenize_document(text: str, tokenizer: Any, *, doctag: str | None, mask_doctag: bool
                      ) -> tuple[list[int], list[int]]:
    """Token ids and labels of one document (see the module docstring)."""
    prefix: list[int] = []
    bos = tokenizer.bos_token_id
    if bos is not None and bos != tokenizer.eos_token_id:
        prefix.append(bos)
    if doctag:
        prefix += tokenizer(doctag, add_special_tokens=False)["input_ids"]
    body = tokenizer(text, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        body = body + [tokenizer.eos_token_id]
    ids = prefix + body
    labels = ([IGNORE] * len(prefix) if mask_doctag else list(prefix)) + list(body)
    return ids, labels


def segments_of(doc_id: str, ids: list[int], labels: list[int], max_len: int) -> list[Segment]:
    """Cut a document into segments of at most ``max_len`` tokens; mask each one's first
    label (no token of the same segment predicts it)."""
    out = []
    for k in range(0, len(ids), max_len):
        seg_labels = list(labels[k: k + max_len])
        seg_labels[0] = IGNORE
        out.append(Segment(doc_id if k == 0 else f"{doc_id}#{k // max_len}",
                           list(ids[k: k + max_len]), seg_labels))
    return out


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing bin packing: indices of ``lengths`` grouped into bins of total
    length <= ``capacity``. O(n log n) lookups; ties broken by index, so it is deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"segment {i} has {n} tokens, more than the capacity {capacity}")
        pos = bisect.bisect_left(free, (n, -1))
        if pos < len(free):
            rem, b = free.pop(pos)
            bins[b].append(i)
            rem -= n
        else:
            b = len(bins)
            bins.append([i])
            rem = capacity - n
        if rem > 0:
            bisect.insort(free, (rem, b))
    return bins


def fill_rows(docs: Sequence[tuple[str, list[int], list[int]]], capacity: int
              ) -> list[list[Segment]]:
    """The ``fill`` packer: rows of exactly ``capacity`` tokens (the last may be shorter)."""
    rows: list[list[Segment]] = []
    row: list[Segment] = []
    room = capacity
    for doc_id, ids, labels in docs:
        start, part = 0, 0
        while start < len(ids):
            n = min(room, len(ids) - start)
            seg_labels = list(labels[start: start + n])
            seg_labels[0] = IGNORE
            row.append(Segment(doc_id if part == 0 else f"{doc_id}#{part}",
                               list(ids[start: start + n]), seg_labels))
            start += n
            part += 1
            room -= n
            if room == 0:
                rows.append(row)
                row, room = [], capacity
    if row:
        rows.append(row)
    return rows


def build_dataset(docs: pl.DataFrame, tokenizer: Any, spec: DatasetSpec, *,
                  source: str = "documents") -> tuple[pl.DataFrame, dict[str, Any]]:
    """Tokenize, budget and pack ``docs`` (columns ``doc_id``, ``text``).

    Returns the packed rows (``DATASET_SCHEMA``: list columns ``input_ids``, ``labels``,
    ``position_ids`` of int64 and ``doc_ids`` of str, and ``n_tokens``, ``n_docs``) and
    statistics (token counts, packing efficiency = tokens in rows / (rows x max_seq_len)).
    """
    if docs.is_empty():
        raise EmptyDatasetError(f"{source}: no documents to build a dataset from")
    rng = np.random.default_rng(spec.seed)
    order = rng.permutation(len(docs))
    doc_ids, texts = docs["doc_id"].to_list(), docs["text"].to_list()
    tokenized: list[tuple[str, list[int], list[int]]] = []
    used_tokens = 0
    for i in order:
        if spec.token_budget is not None and used_tokens >= spec.token_budget:
            break
        ids, labels = tokenize_document(texts[int(i)], tokenizer, doctag=spec.doctag,
                                        mask_doctag=spec.mask_doctag)
        tokenized.append((str(doc_ids[int(i)]), ids, labels))
        used_tokens += len(ids)
    if spec.packing == "fill":
        packed = fill_rows(tokenized, spec.max_seq_len)
    else:
        segments = [seg for d in tokenized for seg in segments_of(*d, spec.max_seq_len)]
        packed = [[segments[i] for i in b]
                  for b in pack([len(s.input_ids) for s in segments], spec.max_seq_len)]
    rows = []
    for segs in packed:
        rows.append({
            "input_ids": [t for s in segs for t in s.input_ids],
            "labels": [t for s in segs for t in s.labels],
            "position_ids": [p for s in segs for p in range(len(s.input_ids))],
            "n_tokens": sum(len(s.input_ids) for s in segs),
            "n_docs": len(segs),
            "doc_ids": [s.doc_id for s in segs],
        })
    if spec.packing == "bfd":
        # bfd rows come out grouped by size; shuffle them once (the trainer shuffles again
        # per epoch) so an unshuffled reader does not see a length curriculum.
        rows = [rows[i] for i in rng.permutation(len(rows))]
    table = pl.DataFrame(rows, schema=DATASET_SCHEMA)
    n_tok = sum(r["n_tokens"] for r in rows)
    stats = {
        "documents_available": int(len(docs)),
        "documents_used": len(tokenized),
        "segments": sum(r["n_docs"] for r in rows),
        "documents_split": len({d.split("#")[0] for r in rows for d in r["doc_ids"]
                                if "#" in d}),
        "packing": spec.packing,
        "rows": len(table),
        "tokens": n_tok,
        "loss_tokens": sum(sum(1 for t in r["labels"] if t != IGNORE) for r in rows),
        "token_budget": spec.token_budget,
        "max_seq_len": spec.max_seq_len,
        "packing_efficiency": n_tok / (len(table) * spec.max_seq_len),
    }
    if spec.token_budget is not None and used_tokens < spec.token_budget:
        log.warning("%s: only %d tokens available for a budget of %d", source, used_tokens,
                    spec.token_budget)
    log.info("%s: %s", source, stats)
    return table, stats
