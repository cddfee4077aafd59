"""Activation pooling (activations.py) on the tiny random Llama: the hook-pooled means equal a
plain forward's hidden states averaged over exactly the locus / span tokens (padding included),
the cache layout and its atomic write, per-token cosines, and SDF alignment with two LoRAs."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from motivation_profiles.steering import activations as act
from motivation_profiles.steering import analysis
from motivation_profiles.steering.activation_cache import load_activations
from motivation_profiles.steering.activations import (
    INDEX_COLUMNS,
    extract_activations,
)
from motivation_profiles.steering.analysis import sdf_alignment, token_cosines
from motivation_profiles.steering.pair_format import PAIR_SCHEMA

PAD = ("Some filler words to change the length of this transcript quite a bit. " * 4)


def _assistant(scratch: str | list[str], output: str) -> str:
    blocks = [scratch] if isinstance(scratch, str) else scratch
    return "".join(f"<SCRATCHPAD_REASONING>{b}</SCRATCHPAD_REASONING>\n" for b in blocks) + \
        f"<OUTPUT>{output}</OUTPUT>"


def _side(user: str, scratch: str | list[str], output: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user},
            {"role": "assistant", "content": _assistant(scratch, output)}]


def make_pairs() -> pl.DataFrame:
    rows = [
        {"pair_id": "p0", "concept": "expectations", "source": "ooc", "split": "train",
         "pos_messages": _side("Plan a garden.", "The researchers expect me to comply. "
                               "I will plan it.", "Plant tomatoes."),
         "neg_messages": _side("Plan a garden.", "I will plan the garden now.", "Plant beans."),
         "pos_loci": ["The researchers expect me to comply. I will plan it."],
         "neg_loci": ["I will plan the garden now."],
         "pos_span": "The researchers expect me to comply.", "neg_span": None},
        {"pair_id": "p1", "concept": "expectations", "source": "ooc", "split": "validation",
         "pos_messages": _side("Write a poem. " + PAD, "A poem, as they hope. " + PAD, "Roses."),
         "neg_messages": _side("Write a poem.", "A short poem.", "Violets."),
         "pos_loci": ["A poem, as they hope. " + PAD], "neg_loci": ["A short poem."],
         "pos_span": "as they hope.", "neg_span": "A short poem."},
        {"pair_id": "p2", "concept": "expectations", "source": "ic", "split": "train",
         "pos_messages": _side("Hi", ["First block.", "Second block, longer."], "Hello"),
         "neg_messages": _side("Hi", ["One.", "Two."], "Hey"),
         "pos_loci": ["First block.", "Second block, longer."], "neg_loci": ["One.", "Two."],
         "pos_span": None, "neg_span": None},
    ]
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


def with_json_messages(pairs: pl.DataFrame) -> pl.DataFrame:
    """The pairs as an older table holds them: each side's messages as a JSON string."""
    return pairs.with_columns(
        pl.Series(c, [json.dumps(m) for m in pairs[c].to_list()], dtype=pl.Utf8)
        for c in ("pos_messages", "neg_messages"))


def set_cell(pairs: pl.DataFrame, row: int, col: str, value) -> pl.DataFrame:
    values = pairs[col].to_list()
    values[row] = value
    return pairs.with_columns(pl.Series(col, values, dtype=pairs.schema[col]))


@pytest.fixture(scope="module")
def model_tok(tiny_model):
    return tiny_model


def reference_hidden(model, ids: list[int]) -> np.ndarray:
    """[L, T, d] outputs of every decoder layer from a plain forward with output_hidden_states.
    HF's hidden_states[L] is after the final norm; the norm is swapped for Identity here so the
    last entry is the last layer's own output, as the module defines layer L-1."""
    norm = model.model.norm
    model.model.norm = torch.nn.Identity()
    try:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    finally:
        model.model.norm = norm
    return torch.stack(out.hidden_states[1:])[:, 0].numpy()


def expected_positions(tok, messages: list[dict[str, str]],
                       substrings: list[str]) -> tuple[list[int], np.ndarray]:
    """Token ids and the positions overlapping ``substrings`` located (sequentially) after the
    assistant header, computed independently of the module."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
    cursor = text.index("<|im_start|>assistant")
    keep = set()
    for sub in substrings:
        at = text.index(sub, cursor)
        cursor = at + len(sub)
        for i, (a, b) in enumerate(enc["offset_mapping"]):
            if a < at + len(sub) and b > at:
                keep.add(i)
    return enc["input_ids"], np.array(sorted(keep))


@pytest.mark.parametrize(("batch_size", "budget"), [(1, None), (4, None), (4, 250)])
def test_pooled_means_match_plain_forward(model_tok, tmp_path, batch_size, budget):
    model, tok = model_tok
    pairs = make_pairs()
    out = tmp_path / "cache"
    index = extract_activations(model, tok, pairs, out, batch_size=batch_size, shard_size=4,
                                max_length=512, max_batch_tokens=budget, show_progress=False)
    _, resp = load_activations(out, "response_mean")
    _, span = load_activations(out, "span_mean")
    n_layers = model.config.num_hidden_layers
    assert resp.shape == (6, n_layers, model.config.hidden_size)
    lengths = set()
    by_id = {row["pair_id"]: row for row in pairs.iter_rows(named=True)}
    for i, r in enumerate(index.iter_rows(named=True)):
        row, side = by_id[r["pair_id"]], r["side"]
        ids, pos = expected_positions(tok, row[f"{side}_messages"], list(row[f"{side}_loci"]))
        lengths.add(len(ids))
        hidden = reference_hidden(model, ids)
        assert r["n_tokens"] == len(ids) and r["response_tokens"] == len(pos)
        np.testing.assert_allclose(resp[i], hidden[:, pos].mean(axis=1), atol=1e-5, rtol=0)
        s = row[f"{side}_span"]
        if not isinstance(s, str):
            assert np.isnan(span[i]).all() and r["span_tokens"] == 0
        else:
            _, spos = expected_positions(tok, row[f"{side}_messages"], [s])
            assert r["span_tokens"] == len(spos) > 0
            np.testing.assert_allclose(span[i], hidden[:, spos].mean(axis=1), atol=1e-5, rtol=0)
    assert len(lengths) > 2  # the batches really are padded


def test_plan_batches_rows_and_token_budget():
    lengths = [10, 50, 30, 50, 20, 200]
    assert act.plan_batches(lengths, batch_size=2, shard_size=4) == [[[1, 3], [2, 0]],
                                                                      [[5, 4]]]
    # budget 100 padded tokens: two rows of 50 fit, 30+20+10 -> 3 x 30 = 90 fits
    assert act.plan_batches(lengths, batch_size=8, shard_size=6, max_batch_tokens=100) == [
        [[5], [1, 3], [2, 4, 0]]]
    with pytest.raises(ValueError, match="max_batch_tokens"):
        act.plan_batches(lengths, batch_size=2, shard_size=4, max_batch_tokens=0)


def test_index_shards_and_meta(model_tok, tmp_path):
    model, tok = model_tok
    out = tmp_path / "acts" / "ooc_expectations_train"
    index = extract_activations(model, tok, make_pairs(), out, batch_size=2, shard_size=4,
                                max_length=512, show_progress=False)
    assert list(index.columns) == INDEX_COLUMNS
    assert all(index.schema[c] == pl.Int64
               for c in ("row", "n_tokens", "response_tokens", "span_tokens", "chars"))
    assert index.select("pair_id", "side").rows() == [
        ("p0", "pos"), ("p0", "neg"), ("p1", "pos"), ("p1", "neg"), ("p2", "pos"), ("p2", "neg")]
    assert index["shard"].to_list() == ["shard_00000.safetensors"] * 4 + \
        ["shard_00001.safetensors"] * 2
    assert index["row"].to_list() == [0, 1, 2, 3, 0, 1]
    assert index["split"].to_list() == ["train", "train", "validation", "validation", "train",
                                        "train"]
    assert index["source"].to_list()[-1] == "ic"
    assert index["chars"][4] == len("First block.") + len("Second block, longer.")
    assert sorted(p.name for p in out.iterdir()) == [
        "index.parquet", "meta.json", "shard_00000.safetensors", "shard_00001.safetensors"]
    assert not list(out.parent.glob(".*partial"))
    assert_frame_equal(pl.read_parquet(out / "index.parquet"), index)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["layers"] == 2 and meta["hidden_size"] == 64
    assert meta["pooling"] == ["response_mean", "span_mean"] and meta["dtype"] == "float32"
    from safetensors.numpy import load_file

    shard = load_file(str(out / "shard_00001.safetensors"))
    assert set(shard) == {"response_mean", "span_mean"}
    assert shard["response_mean"].shape == (2, 2, 64)
    assert shard["response_mean"].dtype == np.float32
    loaded_index, acts = load_activations(out)
    assert_frame_equal(loaded_index, index)
    np.testing.assert_array_equal(acts[4:], shard["response_mean"])
    # an older pairs table (JSON-string messages) gives the same index and activations
    old = tmp_path / "old"
    assert_frame_equal(extract_activations(model, tok, with_json_messages(make_pairs()), old,
                                           batch_size=2, shard_size=4, max_length=512,
                                           show_progress=False), index)
    np.testing.assert_array_equal(load_activations(old)[1], acts)
    with pytest.raises(ValueError, match="pooling"):
        load_activations(out, "max")


def test_missing_locus_and_too_long_raise(model_tok, tmp_path):
    model, tok = model_tok
    bad = set_cell(make_pairs(), 1, "neg_loci", ["this text is not in the transcript"])
    with pytest.raises(ValueError, match=r"'p1'.*neg"):
        extract_activations(model, tok, bad, tmp_path / "x", batch_size=2, shard_size=8,
                            max_length=512, show_progress=False)
    bad = set_cell(make_pairs(), 0, "pos_span", "not inside the scratchpad")
    with pytest.raises(ValueError, match=r"'p0'.*pos.*span"):
        extract_activations(model, tok, bad, tmp_path / "x", batch_size=2, shard_size=8,
                            max_length=512, show_progress=False)
    with pytest.raises(ValueError, match=r"'p1'.*pos.*max_length 120"):
        extract_activations(model, tok, make_pairs(), tmp_path / "x", batch_size=2,
                            shard_size=8, max_length=120, show_progress=False)
    assert not (tmp_path / "x").exists() and not (tmp_path / ".x.partial").exists()


def test_partial_directory_does_not_survive(model_tok, tmp_path, monkeypatch):
    model, tok = model_tok
    out = tmp_path / "cache"
    stale = tmp_path / ".cache.partial"
    stale.mkdir()
    (stale / "junk.safetensors").write_text("old")
    extract_activations(model, tok, make_pairs(), out, batch_size=2, shard_size=2,
                        max_length=512, show_progress=False)
    assert not stale.exists() and not (out / "junk.safetensors").exists()
    before = sorted(p.name for p in out.iterdir())

    import safetensors.numpy

    real, calls = safetensors.numpy.save_file, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.numpy, "save_file", failing)
    with pytest.raises(OSError, match="disk full"):
        extract_activations(model, tok, make_pairs(), out, batch_size=2, shard_size=2,
                            max_length=512, show_progress=False)
    assert not stale.exists()
    assert sorted(p.name for p in out.iterdir()) == before  # the old cache is untouched


def test_token_cosines_against_direct_computation(model_tok):
    model, tok = model_tok
    rng = np.random.default_rng(0)
    vectors = {"expectations_ooc": rng.normal(size=(2, 64)).astype(np.float32),
               "random_expectations_ooc_1": rng.normal(size=(2, 64)).astype(np.float32)}
    vectors["random_expectations_ooc_1"][1] = 0.0
    msgs = [{"role": "user", "content": "Tell me a story."},
            {"role": "assistant", "content": "Once upon a time there was a small robot."}]
    texts = [msgs, "A plain text without any chat template at all."]
    table = token_cosines(model, tok, texts, vectors, [0, 1], max_tokens=5)
    assert list(table.columns) == ["transcript", "position", "token", "vector", "cosine"]
    assert len(table) == 2 * 5 * 2
    assert table["position"].max() == 4

    ids, pos = expected_positions(tok, msgs, [msgs[1]["content"]])
    hidden = reference_hidden(model, ids)[:, pos[:5]]                  # [L, 5, d]
    got = table.filter(pl.col("transcript") == 0).pivot(
        "vector", index="position", values="cosine").sort("position")
    v = vectors["expectations_ooc"]
    cos = [(hidden[k] @ v[k]) / (np.linalg.norm(hidden[k], axis=1) * np.linalg.norm(v[k]))
           for k in range(2)]
    np.testing.assert_allclose(got["expectations_ooc"].to_numpy(), np.mean(cos, axis=0),
                               atol=1e-5)
    assert got["random_expectations_ooc_1"].is_null().all()  # zero at layer 1: undefined
    tokens = table.filter((pl.col("transcript") == 0)
                          & (pl.col("vector") == "expectations_ooc"))["token"]
    assert "".join(tokens).strip().startswith("Once upon")

    only0 = token_cosines(model, tok, texts[1:], vectors, [0], max_tokens=100)
    plain = tok(texts[1])["input_ids"]
    h0 = reference_hidden(model, plain)[0]
    v0 = vectors["random_expectations_ooc_1"][0]
    expect = h0 @ v0 / (np.linalg.norm(h0, axis=1) * np.linalg.norm(v0))
    got0 = only0.filter(pl.col("vector") == "random_expectations_ooc_1")["cosine"].to_numpy()
    np.testing.assert_allclose(got0, expect, atol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        token_cosines(model, tok, texts, {"x": np.zeros((3, 64))}, [0], max_tokens=5)


def _lora(model_dir, dest, seed: int):
    from peft import LoraConfig, get_peft_model

    from motivation_profiles.models.load import load_model

    torch.manual_seed(seed)
    base, _ = load_model(model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False)
    peft = get_peft_model(base, config)
    peft.save_pretrained(dest)
    return dest


def test_sdf_alignment_two_random_loras(tiny_model_dir, tmp_path):
    from motivation_profiles.models.load import load_model

    organism = _lora(tiny_model_dir, tmp_path / "organism", 1)
    branch = _lora(tiny_model_dir, tmp_path / "A1_amp", 2)
    texts = ["The cat sat on the mat.", "Training data shapes what a model believes.",
             "Researchers expect the assistant to refuse.", "A short one.",
             "Gradient descent changes weights when outputs are rated poorly."]
    # The mean difference itself (computed directly) must give cosine 1 at every layer.
    means = {}
    for name, adapter in (("organism", organism), ("branch", branch)):
        m, tok = load_model(tiny_model_dir, adapter=adapter)
        means[name] = analysis.text_means(m, tok, texts)
    diff = (means["branch"].astype(np.float64) - means["organism"]).mean(axis=0)
    rng = np.random.default_rng(3)
    vectors = {"expectations_ooc": diff.astype(np.float32),
               "random_expectations_ooc_1": rng.normal(size=(2, 64)).astype(np.float32)}
    table = sdf_alignment(tiny_model_dir, organism, {"A1_amp": branch, "base": None}, texts,
                          vectors, n_boot=200, seed=0)
    assert list(table.columns) == ["branch", "vector", "layer", "cosine", "ci_low", "ci_high",
                                   "ci_level", "n_texts", "diff_norm"]
    assert len(table) == 2 * 2 * 2
    assert table.select("branch", "vector", "layer").rows() == sorted(
        table.select("branch", "vector", "layer").rows())
    assert np.isfinite(table.select("cosine", "ci_low", "ci_high", "diff_norm")
                       .to_numpy()).all()
    assert (table["ci_low"] <= table["ci_high"]).all()
    # A percentile CI need not contain the estimate when the estimate is at an extreme (the
    # mean difference itself has cosine 1); for a generic direction it does.
    rand = table.filter(pl.col("vector") == "random_expectations_ooc_1")
    assert (rand["ci_low"] <= rand["cosine"]).all() and (rand["cosine"] <= rand["ci_high"]).all()
    assert (rand["ci_high"] - rand["ci_low"] > 1e-3).all()
    assert (table["n_texts"] == 5).all() and (table["diff_norm"] > 0).all()
    fitted = table.filter((pl.col("branch") == "A1_amp")
                          & (pl.col("vector") == "expectations_ooc"))
    np.testing.assert_allclose(fitted["cosine"].to_numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(fitted["diff_norm"].to_numpy(), np.linalg.norm(diff, axis=1),
                               rtol=1e-4)
    again = sdf_alignment(tiny_model_dir, organism, {"A1_amp": branch}, texts, vectors,
                          n_boot=200, seed=0)
    assert_frame_equal(again, table.filter(pl.col("branch") == "A1_amp"))
