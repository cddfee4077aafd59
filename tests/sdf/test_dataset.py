"""SDF dataset: tokenization, DOCTAG masking, packing and the token budget."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from motivation_profiles.sdf.dataset import (
    IGNORE,
    DatasetSpec,
    EmptyDatasetError,
    build_dataset,
    pack,
    tokenize_document,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return tiny_model[1]


def _docs(n: int = 30, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(5, 120)))) + f" doc{i}."
             for i in range(n)]
    return pl.DataFrame({"doc_id": [f"d{i}" for i in range(n)], "text": texts})


def _segments(row) -> list[tuple[str, list[int], list[int]]]:
    """Split a packed row back into its segments using the position resets."""
    starts = [k for k, p in enumerate(row["position_ids"]) if p == 0] + [row["n_tokens"]]
    return [(row["doc_ids"][j], list(row["input_ids"][a:b]), list(row["labels"][a:b]))
            for j, (a, b) in enumerate(zip(starts, starts[1:], strict=False))]


@pytest.mark.parametrize("packing", ["fill", "bfd"])
def test_no_token_lost_and_boundaries_kept(tokenizer, packing):
    docs = _docs()
    spec = DatasetSpec(max_seq_len=64, token_budget=None, seed=3, packing=packing)
    table, stats = build_dataset(docs, tokenizer, spec)
    # native list columns: int64 token ids, labels and positions, str document ids
    assert dict(table.schema) == {
        "input_ids": pl.List(pl.Int64), "labels": pl.List(pl.Int64),
        "position_ids": pl.List(pl.Int64), "n_tokens": pl.Int64, "n_docs": pl.Int64,
        "doc_ids": pl.List(pl.Utf8)}
    assert (table["n_tokens"] <= 64).all()
    assert table["n_tokens"].to_list() == [len(x) for x in table["input_ids"]]
    pieces: dict[str, list[tuple[int, list[int], list[int]]]] = {}
    for row in table.iter_rows(named=True):
        segs = _segments(row)
        assert len(segs) == row["n_docs"]
        for doc_id, ids, labels in segs:
            base, _, part = doc_id.partition("#")
            pieces.setdefault(base, []).append((int(part or 0), ids, labels))
            assert labels[0] == IGNORE  # nothing in the segment predicts its first token
    assert set(pieces) == set(docs["doc_id"])
    for doc in docs.iter_rows(named=True):
        ids, labels = tokenize_document(doc["text"], tokenizer, doctag="<DOCTAG>",
                                        mask_doctag=True)
        parts = sorted(pieces[doc["doc_id"]])
        assert [t for _, p, _ in parts for t in p] == ids  # every token, in order
        got_labels = [t for _, _, lab in parts for t in lab]
        starts = np.cumsum([0] + [len(p) for _, p, _ in parts[:-1]])
        expect = list(labels)
        for s in starts:
            expect[s] = IGNORE
        assert got_labels == expect
    assert stats["tokens"] == sum(len(x) for x in table["input_ids"])
    if packing == "bfd":  # only documents longer than a row are split
        long = sum(len(tokenize_document(t, tokenizer, doctag="<DOCTAG>", mask_doctag=True)[0])
                   > 64 for t in docs["text"])
        assert 0 < long < len(docs) and stats["documents_split"] == long


def test_fill_rows_are_full_except_the_last(tokenizer):
    table, stats = build_dataset(_docs(60), tokenizer,
                                 DatasetSpec(max_seq_len=128, token_budget=None))
    sizes = table["n_tokens"].to_list()
    assert sizes[:-1] == [128] * (len(sizes) - 1)
    assert stats["packing_efficiency"] == sum(sizes) / (128 * len(sizes))
    assert stats["packing_efficiency"] > 0.98


def test_doctag_is_masked_and_body_is_not(tokenizer):
    ids, labels = tokenize_document("Hello world.", tokenizer, doctag="<DOCTAG>",
                                    mask_doctag=True)
    tag = tokenizer("<DOCTAG>", add_special_tokens=False)["input_ids"]
    body = tokenizer("Hello world.", add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if (tokenizer.bos_token_id is not None and
                                       tokenizer.bos_token_id != tokenizer.eos_token_id) else []
    assert ids == bos + tag + body + [tokenizer.eos_token_id]
    assert labels == [IGNORE] * (len(bos) + len(tag)) + body + [tokenizer.eos_token_id]
    ids2, labels2 = tokenize_document("Hello world.", tokenizer, doctag=None, mask_doctag=True)
    assert ids2 == bos + body + [tokenizer.eos_token_id]
    assert labels2 == [IGNORE] * len(bos) + body + [tokenizer.eos_token_id]
    _, unmasked = tokenize_document("Hello world.", tokenizer, doctag="<DOCTAG>",
                                    mask_doctag=False)
    assert unmasked == bos + tag + body + [tokenizer.eos_token_id]


def test_long_document_is_split_into_segments(tokenizer):
    docs = pl.DataFrame({"doc_id": ["long"], "text": ["word " * 300]})
    for packing in ("fill", "bfd"):
        table, stats = build_dataset(docs, tokenizer, DatasetSpec(
            max_seq_len=50, token_budget=None, packing=packing))
        assert stats["documents_split"] == 1
        assert (table["n_tokens"] <= 50).all()
        assert table["n_tokens"].sum() == len(tokenize_document(
            "word " * 300, tokenizer, doctag="<DOCTAG>", mask_doctag=True)[0])


def test_token_budget_keeps_a_seeded_subset_of_whole_documents(tokenizer):
    docs = _docs(40)
    spec = DatasetSpec(max_seq_len=64, token_budget=300, seed=1)
    a, sa = build_dataset(docs, tokenizer, spec)
    b, _ = build_dataset(docs, tokenizer, spec)
    assert a.equals(b)  # deterministic
    assert 300 <= sa["tokens"] < 300 + 200  # stops at the first document past the budget
    assert sa["documents_used"] < len(docs)
    c, _ = build_dataset(docs, tokenizer, DatasetSpec(max_seq_len=64, token_budget=300, seed=2))
    assert not a.equals(c)


def test_empty_documents_raise_naming_the_source(tokenizer):
    with pytest.raises(EmptyDatasetError, match="A1_amp"):
        build_dataset(pl.DataFrame(schema={"doc_id": pl.Utf8, "text": pl.Utf8}), tokenizer,
                      DatasetSpec(max_seq_len=64, token_budget=None), source="A1_amp")


def test_pack_is_best_fit_and_rejects_oversized_items():
    bins = pack([6, 5, 4, 3, 2], 10)
    assert sorted(sorted(b) for b in bins) == [[0, 2], [1, 3, 4]]
    with pytest.raises(ValueError, match="capacity"):
        pack([11], 10)


def test_spec_errors_name_the_key():
    with pytest.raises(ValueError, match="packing"):
        DatasetSpec(max_seq_len=64, token_budget=None, packing="zip")
    with pytest.raises(ValueError, match="max_seq_len"):
        DatasetSpec.from_dict({"doctag": None, "mask_doctag": True, "seed": 0,
                               "packing": "fill"}, token_budget=None)
