"""LoRA training on a tiny random Llama: learning, the saved adapter, continuation, resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from motivation_profiles.provenance import write_table
from motivation_profiles.sdf.dataset import DatasetSpec, build_dataset
from motivation_profiles.sdf.train import (
    VLLM_LORA_MODULES,
    LoraSpec,
    TrainingInterrupted,
    TrainSpec,
    collate,
    train_lora,
)

LORA = {"rank": 8, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"}


def _train(**over) -> dict:
    t = dict(learning_rate=1e-2, lr_scheduler="cosine", warmup_ratio=0.1, epochs=2,
             per_device_batch_size=2, gradient_accumulation_steps=2, weight_decay=0.0,
             max_grad_norm=1.0, seed=0, gradient_checkpointing=False, dtype="float32",
             save_every_steps=100, log_every_steps=1)
    t.update(over)
    return t


@pytest.fixture(scope="module")
def dataset(tiny_model, tmp_path_factory):
    tok = tiny_model[1]
    docs = pd.DataFrame({"doc_id": [f"d{i}" for i in range(12)],
                         "text": [f"Document {i}: the cat sat on the mat. " * (i % 4 + 2)
                                  for i in range(12)]})
    table, _ = build_dataset(docs, tok, DatasetSpec(max_seq_len=64, token_budget=None))
    path = tmp_path_factory.mktemp("ds") / "ds.parquet"
    write_table(table, path, {})
    return path


def _weights(adapter_dir) -> dict[str, torch.Tensor]:
    return load_file(adapter_dir / "adapter_model.safetensors")


def test_loss_decreases_and_adapter_is_standard_peft(tiny_model_dir, tiny_model, tmp_path):
    tok = tiny_model[1]
    docs = pd.DataFrame({"doc_id": ["rep"], "text": ["The zebra plays the violin at noon."]})
    table, _ = build_dataset(docs, tok, DatasetSpec(max_seq_len=64, token_budget=None,
                                                    doctag=None))
    table = pd.concat([table] * 4, ignore_index=True)  # one document, repeated
    write_table(table, tmp_path / "rep.parquet", {"rule": "test"})
    curve = train_lora(tiny_model_dir, tmp_path / "rep.parquet", tmp_path / "adapter",
                       lora={**LORA, "dropout": 0.0}, resume_key="k",
                       train=_train(epochs=40, per_device_batch_size=4,
                                    gradient_accumulation_steps=1, warmup_ratio=0.0,
                                    lr_scheduler="constant", learning_rate=5e-2),
                       work_dir=tmp_path / "work")
    assert len(curve) == 40
    # A random 64-wide model with tied, tiny-norm embeddings cannot sharpen its logits much
    # through LoRA on its decoder layers (ln(vocab) = 10.8 nats at the start); it still has to
    # learn the document steadily.
    assert curve["loss"].iloc[-5:].mean() < curve["loss"].iloc[0] - 0.4
    assert curve["loss"].iloc[-10:].mean() < curve["loss"].iloc[:10].mean()
    out = tmp_path / "adapter"
    assert (out / "manifest.json").is_file() and not (tmp_path / "work").exists()
    assert len(pd.read_parquet(out / "loss_curve.parquet")) == 40

    cfg = json.loads((out / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) <= VLLM_LORA_MODULES
    assert set(cfg["target_modules"]) == VLLM_LORA_MODULES  # all linear layers of a Llama
    assert not any("lm_head" in k or "embed" in k for k in _weights(out))

    from peft import PeftModel

    from motivation_profiles.models import load_model

    base, _ = load_model(tiny_model_dir)
    ids = torch.tensor([tok("The zebra plays")["input_ids"]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, out)(ids).logits
    assert not torch.allclose(before, tuned)


def test_resume_gives_the_uninterrupted_weights(tiny_model_dir, dataset, tmp_path):
    full = tmp_path / "full"
    train_lora(tiny_model_dir, dataset, full, lora=LORA, train=_train(), resume_key="k",
               work_dir=tmp_path / "w_full")
    part = tmp_path / "part"
    with pytest.raises(TrainingInterrupted):
        train_lora(tiny_model_dir, dataset, part, lora=LORA, train=_train(), resume_key="k",
                   work_dir=tmp_path / "w_part", stop_after_steps=3)
    assert not part.exists() and list((tmp_path / "w_part").glob("checkpoint-3"))
    curve = train_lora(tiny_model_dir, dataset, part, lora=LORA, train=_train(),
                       resume_key="k", work_dir=tmp_path / "w_part")
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert curve["step"].tolist() == list(range(1, len(curve) + 1))  # history kept

    # a checkpoint made for other inputs is discarded, not resumed
    other = tmp_path / "other"
    with pytest.raises(TrainingInterrupted):
        train_lora(tiny_model_dir, dataset, other, lora=LORA, train=_train(seed=5),
                   resume_key="other-settings", work_dir=tmp_path / "w_other",
                   stop_after_steps=2)
    train_lora(tiny_model_dir, dataset, other, lora=LORA, train=_train(), resume_key="k",
               work_dir=tmp_path / "w_other")
    c = _weights(other)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_continuing_from_an_init_adapter(tiny_model_dir, dataset, tmp_path):
    init = tmp_path / "organism"
    train_lora(tiny_model_dir, dataset, init, lora=LORA, train=_train(epochs=1),
               resume_key="a", work_dir=tmp_path / "w1")
    same = tmp_path / "same"
    train_lora(tiny_model_dir, dataset, same, lora=LORA,
               train=_train(epochs=1, learning_rate=1e-12, lr_scheduler="constant"),
               init_adapter=init, resume_key="b", work_dir=tmp_path / "w2")
    a, b = _weights(init), _weights(same)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # starts at the init adapter
    moved = tmp_path / "moved"
    train_lora(tiny_model_dir, dataset, moved, lora=LORA, train=_train(epochs=1),
               init_adapter=init, resume_key="c", work_dir=tmp_path / "w3")
    assert any(not torch.allclose(a[k], _weights(moved)[k]) for k in a)
    with pytest.raises(ValueError, match="rank 8"):
        train_lora(tiny_model_dir, dataset, tmp_path / "bad", lora={**LORA, "rank": 4},
                   train=_train(), init_adapter=init, resume_key="d", work_dir=tmp_path / "w4")


def test_padded_packed_batch_matches_documents_alone(tiny_model):
    """Two packed rows of different length in one batch: each document's per-token losses
    equal those of the document run alone (no attention across documents or padding)."""
    model, tok = tiny_model
    docs = [tok(t)["input_ids"] for t in ("alpha beta gamma delta", "one two three",
                                          "red green blue yellow purple")]
    rows = [
        {"input_ids": docs[0] + docs[1], "labels": docs[0] + docs[1],
         "position_ids": list(range(len(docs[0]))) + list(range(len(docs[1])))},
        {"input_ids": docs[2], "labels": docs[2], "position_ids": list(range(len(docs[2])))},
    ]
    batch = collate(rows, tok.pad_token_id or 0)
    assert batch["input_ids"].shape[1] == len(docs[0]) + len(docs[1])
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache transformers does not look for
        # packed sequences and the documents would attend to each other
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=None, use_cache=False).logits
        for r, start, doc in ((0, 0, docs[0]), (0, len(docs[0]), docs[1]), (1, 0, docs[2])):
            alone = model(input_ids=torch.tensor([doc])).logits[0]
            assert torch.allclose(packed[r, start:start + len(doc)], alone, atol=1e-4)


def test_errors_name_what_is_wrong(tiny_model_dir, tmp_path):
    write_table(pd.DataFrame({"input_ids": [], "labels": [], "position_ids": []}),
                tmp_path / "empty.parquet", {})
    with pytest.raises(ValueError, match="empty.parquet"):
        train_lora(tiny_model_dir, tmp_path / "empty.parquet", tmp_path / "o", lora=LORA,
                   train=_train(), resume_key="k", work_dir=tmp_path / "w")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainSpec.from_dict({k: v for k, v in _train().items() if k != "learning_rate"})
    with pytest.raises(ValueError, match="rnak"):
        LoraSpec.from_dict({**LORA, "rnak": 3})
