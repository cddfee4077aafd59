"""LoRA training (sdf/train.py) on tiny random Llamas: packing mask, learning, the saved
adapter, continuation from an init adapter, resume, errors."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal
from safetensors.torch import load_file

from motivation_profiles.core.provenance import write_table
from motivation_profiles.sdf.train import (
    IGNORE,
    VLLM_LORA_MODULES,
    LoraSpec,
    TrainingInterrupted,
    TrainSpec,
    collate,
    forward_loss,
    loss_tokens,
    train_lora,
)

LORA = {"rank": 8, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"}
TEXTS = [f"Document {i}: the {w} sat on the mat near {i * 7} red boxes."
         for i, w in enumerate(["cat", "dog", "owl", "fox", "yak", "emu", "ant", "bee", "elk",
                                "cod", "eel", "gnu"])]


def train_spec(**over) -> dict:
    t = dict(learning_rate=1e-2, lr_scheduler="cosine", warmup_ratio=0.1, epochs=2,
             per_device_batch_size=2, gradient_accumulation_steps=2, weight_decay=0.01,
             max_grad_norm=1.0, seed=0, gradient_checkpointing=False, dtype="float32",
             save_every_steps=100, log_every_steps=1)
    t.update(over)
    return t


def document(tok, text: str) -> tuple[list[int], list[int]]:
    ids = [tok.bos_token_id, *tok(text, add_special_tokens=False)["input_ids"],
           tok.eos_token_id]
    return ids, [IGNORE, *ids[1:]]  # the first token is predicted by nothing in its document


def packed_table(tok, texts: list[str], max_len: int) -> pl.DataFrame:
    """Greedy packing of whole documents into rows of at most max_len tokens (the columns
    sdf/dataset.py writes)."""
    rows: list[dict] = []
    cur: dict = {}
    for text in texts:
        ids, labels = document(tok, text)
        if cur and len(cur["input_ids"]) + len(ids) > max_len:
            rows.append(cur)
            cur = {}
        cur.setdefault("input_ids", []).extend(ids)
        cur.setdefault("labels", []).extend(labels)
        cur.setdefault("position_ids", []).extend(range(len(ids)))
        cur["n_docs"] = cur.get("n_docs", 0) + 1
    rows.append(cur)
    for r in rows:
        r["n_tokens"] = len(r["input_ids"])
    return pl.DataFrame(rows).select("input_ids", "labels", "position_ids", "n_tokens", "n_docs")


def weights(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(adapter_dir / "adapter_model.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=atol), k


@pytest.fixture(scope="module")
def tok(tiny_model):
    return tiny_model[1]


@pytest.fixture(scope="module")
def dataset(tok, tmp_path_factory) -> Path:
    """12 documents packed into 7 rows of different lengths (so batches need padding)."""
    path = tmp_path_factory.mktemp("ds") / "ds.parquet"
    table = packed_table(tok, TEXTS, max_len=40)
    assert len(table) == 7 and table["n_docs"].max() >= 2
    write_table(table, path, {"rule": "test"})
    return path


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny random Llama with its (tied) embeddings scaled up 8x. With the default init
    (std 0.02, width 64) no logit can exceed about 1.3, so LoRA on the decoder layers cannot
    take the loss much below ln(49152) = 10.8 nats (it ends near 9.7). Scaled 8x, the initial
    loss is still about uniform (12) while a learned document can reach a few nats. The input
    side is unchanged up to RMSNorm."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dest = tmp_path_factory.mktemp("models") / "sharp"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(8.0)
    model.save_pretrained(dest, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(dest)
    return dest


# ------------------------------------------------------------------------------ packing
def test_padded_packed_batch_matches_documents_alone(tiny_model, tok):
    """Two packed rows of different lengths in one right-padded batch, no attention mask:
    each document's per-token losses equal those of the document run alone."""
    model, _ = tiny_model
    docs = [document(tok, t) for t in ("alpha beta gamma delta epsilon", "one two three",
                                       "red green blue yellow purple orange")]
    row0 = {"input_ids": docs[0][0] + docs[1][0], "labels": docs[0][1] + docs[1][1],
            "position_ids": [*range(len(docs[0][0])), *range(len(docs[1][0]))]}
    row1 = {"input_ids": docs[2][0], "labels": docs[2][1],
            "position_ids": list(range(len(docs[2][0])))}
    batch = collate([row0, row1], tok.pad_token_id)
    width = len(row0["input_ids"])
    pad = width - len(row1["input_ids"])
    assert pad > 0 and batch["input_ids"].shape == (2, width)
    assert batch["position_ids"][1, -pad:].tolist() == list(range(pad))  # its own run
    assert (batch["labels"][1, -pad:] == IGNORE).all()

    def token_losses(logits, ids):  # loss of predicting ids[t+1] from position t
        return torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:]),
                                                 reduction="none")

    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=None, use_cache=False).logits
        alone = [token_losses(model(input_ids=torch.tensor([ids])).logits[0], ids)
                 for ids, _ in docs]
        starts = [(0, 0), (0, len(docs[0][0])), (1, 0)]
        for (r, s), (ids, _), ref in zip(starts, docs, alone, strict=True):
            got = token_losses(packed[r, s:s + len(ids)], ids)
            assert torch.allclose(got, ref, atol=1e-4, rtol=0)
        # the training loss is the token-weighted mean of the same per-token losses
        n = loss_tokens(batch)
        assert n == sum(len(ids) - 1 for ids, _ in docs)
        loss = forward_loss(model, batch, n)
        assert torch.allclose(loss, torch.cat(alone).mean(), atol=1e-4, rtol=0)
        # control: without restarting positions the documents see each other
        leaky = model(input_ids=batch["input_ids"][:1], use_cache=False).logits[0]
        s = len(docs[0][0])
        assert not torch.allclose(token_losses(leaky[s:], docs[1][0]), alone[1], atol=1e-4)


# ------------------------------------------------------------------------------ training
def test_loss_decreases_and_adapter_is_standard_peft(sharp_model_dir, tok, tmp_path, caplog):
    table = packed_table(tok, ["The zebra plays the violin at noon in the quiet park."] * 4,
                         max_len=16)  # one document per row, four copies
    write_table(table, tmp_path / "rep.parquet", {"rule": "test"})
    out = tmp_path / "adapter"
    with caplog.at_level(logging.INFO, logger="motivation_profiles.sdf.train"):
        curve = train_lora(sharp_model_dir, tmp_path / "rep.parquet", out,
                           lora={**LORA, "dropout": 0.0}, resume_key="k",
                           train=train_spec(epochs=20, per_device_batch_size=4,
                                            gradient_accumulation_steps=1, warmup_ratio=0.0,
                                            lr_scheduler="constant", weight_decay=0.0,
                                            log_every_steps=5),
                           work_dir=tmp_path / "work", provenance={"rule": "test"})
    assert curve["step"].to_list() == list(range(1, 21))
    losses = curve["loss"].to_list()
    assert losses[-1] < 0.5 * losses[0], losses
    assert losses[-1] < math.log(len(tok)) - 4, losses  # far below a uniform guess
    assert (curve["tokens"] == 4 * (len(table["input_ids"][0]) - 1)).all()
    assert list(curve.columns) == ["step", "epoch", "loss", "learning_rate", "grad_norm",
                                   "tokens", "seconds"]
    assert sum("step 5/20" in r.getMessage() for r in caplog.records) == 1

    # outputs: adapter, loss curve, manifest; the work dir is gone
    assert (out / "manifest.json").is_file() and not (tmp_path / "work").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"adapter_model.safetensors", "adapter_config.json",
            "loss_curve.parquet"} <= set(manifest["files"])
    # stored without the wall-clock seconds (identical trainings, identical files)
    assert_frame_equal(pl.read_parquet(out / "loss_curve.parquet"), curve.drop("seconds"))
    assert not list(tmp_path.glob(".adapter*"))  # no temporary left

    cfg = json.loads((out / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) <= VLLM_LORA_MODULES
    assert set(cfg["target_modules"]) == VLLM_LORA_MODULES  # all linear layers of a Llama
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 16
    assert not any("lm_head" in k or "embed" in k for k in weights(out))

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(sharp_model_dir, dtype=torch.float32)
    ids = torch.tensor([tok("The zebra plays")["input_ids"]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, out)(ids).logits
    assert not torch.allclose(before, tuned)


def test_peft_all_linear_excludes_the_head(tiny_model_dir):
    """What peft itself does with "all-linear" (we write the short names instead)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    m = get_peft_model(base, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM"))
    names = {t.rsplit(".", 1)[-1] for t in m.peft_config["default"].target_modules}
    assert names == VLLM_LORA_MODULES


def test_continuing_from_an_init_adapter(tiny_model_dir, dataset, tmp_path):
    init = tmp_path / "organism"
    train_lora(tiny_model_dir, dataset, init, lora=LORA, train=train_spec(epochs=1),
               resume_key="a", work_dir=tmp_path / "w1")
    # learning rate 0: the continued adapter is the init adapter, bit for bit (one adapter)
    same = tmp_path / "same"
    train_lora(tiny_model_dir, dataset, same, lora=LORA,
               train=train_spec(epochs=1, learning_rate=0.0, lr_scheduler="constant"),
               init_adapter=init, resume_key="b", work_dir=tmp_path / "w2")
    assert_same_weights(weights(init), weights(same))
    cfg = json.loads((same / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and set(cfg["target_modules"]) == VLLM_LORA_MODULES
    # a real learning rate moves it
    moved = tmp_path / "moved"
    train_lora(tiny_model_dir, dataset, moved, lora=LORA, train=train_spec(epochs=1),
               init_adapter=init, resume_key="c", work_dir=tmp_path / "w3")
    a, m = weights(init), weights(moved)
    assert a.keys() == m.keys() and any(not torch.equal(a[k], m[k]) for k in a)
    with pytest.raises(ValueError, match="rank 8.*rank 4"):
        train_lora(tiny_model_dir, dataset, tmp_path / "bad", lora={**LORA, "rank": 4},
                   train=train_spec(), init_adapter=init, resume_key="d",
                   work_dir=tmp_path / "w4")
    with pytest.raises(ValueError, match="alpha"):
        train_lora(tiny_model_dir, dataset, tmp_path / "bad", lora={**LORA, "alpha": 8},
                   train=train_spec(), init_adapter=init, resume_key="d",
                   work_dir=tmp_path / "w4")


def test_resume_gives_the_uninterrupted_weights(tiny_model_dir, dataset, tmp_path, caplog):
    """Dropout 0.1, shuffling over 2 epochs, accumulation 2, a partial last step per epoch
    (7 rows: steps of 4, 3 rows): killed after 3 steps and rerun, the adapter equals the
    uninterrupted run's exactly."""
    kw = dict(lora=LORA, train=train_spec(save_every_steps=2))
    full = tmp_path / "full"
    ref_curve = train_lora(tiny_model_dir, dataset, full, resume_key="k",
                           work_dir=tmp_path / "w_full", **kw)
    assert len(ref_curve) == 4  # 2 epochs x ceil(ceil(7 / 2) / 2)

    part = tmp_path / "part"
    with pytest.raises(TrainingInterrupted):
        train_lora(tiny_model_dir, dataset, part, resume_key="k", work_dir=tmp_path / "w_part",
                   stop_after_steps=3, **kw)
    assert not part.exists()
    assert [p.name for p in (tmp_path / "w_part").iterdir()] == ["checkpoint-3"]  # latest only
    state = json.loads((tmp_path / "w_part/checkpoint-3/training_state.json").read_text())
    assert (state["step"], state["epoch"], state["steps_done_in_epoch"]) == (3, 1, 1)
    curve = train_lora(tiny_model_dir, dataset, part, resume_key="k",
                       work_dir=tmp_path / "w_part", **kw)
    assert_same_weights(weights(full), weights(part))
    assert_frame_equal(curve.drop("seconds"), ref_curve.drop("seconds"))

    # a checkpoint made for other inputs or settings is discarded, not resumed
    other = tmp_path / "other"
    with pytest.raises(TrainingInterrupted):
        train_lora(tiny_model_dir, dataset, other, resume_key="other-settings",
                   work_dir=tmp_path / "w_other", stop_after_steps=2, lora=LORA,
                   train=train_spec(save_every_steps=2, learning_rate=0.5))
    with caplog.at_level(logging.INFO, logger="motivation_profiles.sdf.train"):
        train_lora(tiny_model_dir, dataset, other, resume_key="k",
                   work_dir=tmp_path / "w_other", **kw)
    assert any("discarding checkpoint" in r.getMessage() for r in caplog.records)
    assert_same_weights(weights(full), weights(other))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_state(ckpt: Path, edit) -> None:
    state_file = ckpt / "training_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps(edit(state)))


STATE_DAMAGE = {
    "truncated-state": lambda ckpt: _truncate(ckpt / "training_state.json"),
    "state-is-a-list": lambda ckpt: (ckpt / "training_state.json").write_text("[]"),
    "state-lacks-history": lambda ckpt: _edit_state(
        ckpt, lambda s: {k: v for k, v in s.items() if k != "history"}),
    "state-missing": lambda ckpt: (ckpt / "training_state.json").unlink(),
    "truncated-weights": lambda ckpt: _truncate(ckpt / "model.safetensors"),
}


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, dataset, tmp_path_factory) -> dict[str, torch.Tensor]:
    out = tmp_path_factory.mktemp("ref") / "adapter"
    train_lora(tiny_model_dir, dataset, out, resume_key="k", work_dir=out.parent / "w",
               lora=LORA, train=train_spec(save_every_steps=2))
    return weights(out)


@pytest.mark.parametrize("damage", STATE_DAMAGE)
def test_unusable_training_state_is_discarded_not_a_crash(tiny_model_dir, dataset, tmp_path,
                                                          damage, uninterrupted, caplog):
    """A damaged checkpoint (state truncated / wrong shape / missing, or a checkpoint file
    cut short) is discarded with a warning naming the file; training restarts from step 0 and
    ends with the uninterrupted run's weights."""
    kw = dict(lora=LORA, train=train_spec(save_every_steps=2), resume_key="k",
              work_dir=tmp_path / "w")
    with pytest.raises(TrainingInterrupted):
        train_lora(tiny_model_dir, dataset, tmp_path / "a", stop_after_steps=3, **kw)
    ckpt = tmp_path / "w" / "checkpoint-3"
    STATE_DAMAGE[damage](ckpt)
    with caplog.at_level(logging.INFO, logger="motivation_profiles.sdf.train"):
        curve = train_lora(tiny_model_dir, dataset, tmp_path / "a", **kw)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    named = "model.safetensors" if damage == "truncated-weights" else "training_state.json"
    assert str(ckpt / named) in warning and "from step 0" in warning
    assert not any("resuming" in r.getMessage() for r in caplog.records)
    assert curve["step"].to_list() == [1, 2, 3, 4]
    assert_same_weights(uninterrupted, weights(tmp_path / "a"))


def test_training_state_is_written_atomically_with_file_sizes(tiny_model_dir, dataset,
                                                              tmp_path):
    with pytest.raises(TrainingInterrupted):
        train_lora(tiny_model_dir, dataset, tmp_path / "a", lora=LORA,
                   train=train_spec(save_every_steps=2), resume_key="k",
                   work_dir=tmp_path / "w", stop_after_steps=2)
    ckpt = tmp_path / "w" / "checkpoint-2"
    state = json.loads((ckpt / "training_state.json").read_text())
    assert state["files"] == {str(f.relative_to(ckpt)): f.stat().st_size
                              for f in ckpt.rglob("*")
                              if f.is_file() and f.name != "training_state.json"}
    assert "model.safetensors" in state["files"] and len(state["history"]) == 2
    assert not list(ckpt.glob(".*"))  # no temporary left


_TRAIN_SCRIPT = """
import json, sys
from motivation_profiles.sdf.train import train_lora
model, data, out, spec = sys.argv[1:5]
spec = json.loads(spec)
train_lora(model, data, out, lora=spec["lora"], train=spec["train"], resume_key="k",
           work_dir=out + ".work", provenance=spec["provenance"])
"""


def test_identical_trainings_write_identical_adapters(tiny_model_dir, dataset, tmp_path,
                                                      repo):
    """Two identical tiny trainings (2 steps), in processes with different hash seeds and
    SLURM job ids: identical adapter_config.json bytes (target_modules sorted, not in set
    order), identical files, identical manifest hashes."""
    from motivation_profiles.core.hashing import sha256_path
    from motivation_profiles.core.provenance import read_provenance

    outs = []
    for hash_seed, job in (("1", "1001"), ("2", "2002")):
        out = tmp_path / f"run{hash_seed}" / "adapter"
        spec = {"lora": LORA, "train": train_spec(epochs=1),
                "provenance": {"rule": "train_lora", "slurm_job_id": job}}
        env = {**os.environ, "PYTHONHASHSEED": hash_seed,
               "PYTHONPATH": os.pathsep.join([str(repo / "src"), os.environ.get("PYTHONPATH",
                                                                              "")])}
        subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, str(tiny_model_dir),
                        str(dataset), str(out), json.dumps(spec)], env=env, check=True,
                       timeout=600)
        outs.append(out)
    a, b = outs
    config = (a / "adapter_config.json").read_bytes()
    assert config == (b / "adapter_config.json").read_bytes()
    targets = json.loads(config)["target_modules"]
    assert targets == sorted(targets) and set(targets) == VLLM_LORA_MODULES
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert sha256_path(a) == sha256_path(b)
    prov = read_provenance(a / "loss_curve.parquet")
    assert prov["rule"] == "train_lora" and "slurm_job_id" not in prov
    assert "seconds" not in pl.read_parquet(a / "loss_curve.parquet").columns


def test_gradient_checkpointing_and_bf16(tiny_model_dir, dataset, tmp_path):
    """Gradient checkpointing (non-reentrant, with LoRA and dropout) trains the same adapter;
    bfloat16 weights train too (on CPU without autocast; the LoRA weights stay fp32)."""
    runs = {}
    for name, over in (("plain", {}), ("ckpt", {"gradient_checkpointing": True}),
                       ("bf16", {"dtype": "bfloat16"})):
        curve = train_lora(tiny_model_dir, dataset, tmp_path / name, lora=LORA,
                           train=train_spec(epochs=1, **over), resume_key=name,
                           work_dir=tmp_path / f"w-{name}")
        runs[name] = (curve, weights(tmp_path / name))
    assert_same_weights(runs["plain"][1], runs["ckpt"][1], atol=1e-6)
    bf16_curve, bf16_weights = runs["bf16"]
    assert bf16_curve["loss"].is_not_null().all() and bf16_curve["loss"].is_not_nan().all()
    assert all(w.dtype == torch.float32 for w in bf16_weights.values())
    assert abs(bf16_curve["loss"][0] - runs["plain"][0]["loss"][0]) < 0.1


# ------------------------------------------------------------------------------ launching
def test_launch_and_main(monkeypatch, tmp_path):
    """One process: in-process call. Several: `accelerate launch` of this module with the spec
    as JSON, which main() turns back into the same train_lora call."""
    import subprocess
    import sys

    import motivation_profiles.sdf.launch as train_mod

    calls = []
    monkeypatch.setattr(train_mod, "train_lora", lambda **kw: calls.append(kw))
    spec = {"model_dir": "m", "dataset": "d.parquet", "output_dir": "o", "lora": LORA,
            "train": train_spec(), "init_adapter": None, "work_dir": "w", "device": "cuda",
            "provenance": {"rule": "train_lora"}, "resume_key": "k"}
    train_mod.launch(spec, 1, None)
    assert calls == [spec]

    seen = {}

    def fake_run(cmd, check, env):
        seen["cmd"] = cmd
        seen["spec"] = json.loads(Path(cmd[-1]).read_text())
        assert check and "src" in env["PYTHONPATH"]
        train_mod.main([cmd[-1]])  # what each launched process does

    monkeypatch.setattr(subprocess, "run", fake_run)
    train_mod.launch(spec, 4, tmp_path / "fsdp.yaml")
    assert seen["cmd"][:8] == [sys.executable, "-m", "accelerate.commands.launch",
                               "--config_file", str(tmp_path / "fsdp.yaml"), "--num_processes",
                               "4", "-m"]
    assert seen["cmd"][8] == "motivation_profiles.sdf.launch"
    assert seen["spec"] == spec and calls[1] == spec
    assert not Path(seen["cmd"][-1]).exists()  # the temporary spec is removed
    with pytest.raises(ValueError, match="accelerate_config"):
        train_mod.launch(spec, 2, None)


def test_accelerate_configs_parse(repo):
    import yaml

    fsdp = yaml.safe_load((repo / "resources/accelerate/fsdp.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP" and fsdp["mixed_precision"] == "bf16"
    cfg = fsdp["fsdp_config"]
    assert cfg["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    assert cfg["fsdp_cpu_ram_efficient_loading"] and cfg["fsdp_sync_module_states"]
    assert cfg["fsdp_activation_checkpointing"] is False
    single = yaml.safe_load((repo / "resources/accelerate/single.yaml").read_text())
    assert single["distributed_type"] == "NO" and single["num_processes"] == 1


# ------------------------------------------------------------------------------ errors
def test_errors_name_what_is_wrong(tiny_model_dir, tmp_path):
    empty = pl.DataFrame(schema={"input_ids": pl.List(pl.Int64), "labels": pl.List(pl.Int64),
                                 "position_ids": pl.List(pl.Int64)})
    write_table(empty, tmp_path / "empty.parquet", {})
    with pytest.raises(ValueError, match="empty.parquet"):
        train_lora(tiny_model_dir, tmp_path / "empty.parquet", tmp_path / "o", lora=LORA,
                   train=train_spec(), resume_key="k", work_dir=tmp_path / "w")
    with pytest.raises(ValueError, match="learning_rate"):
        TrainSpec.from_dict({k: v for k, v in train_spec().items() if k != "learning_rate"})
    with pytest.raises(ValueError, match="lr_sheduler"):
        TrainSpec.from_dict({**train_spec(), "lr_sheduler": "cosine"})
    with pytest.raises(ValueError, match="rnak"):
        LoraSpec.from_dict({**LORA, "rnak": 3})
    with pytest.raises(ValueError, match="target_modules.*lm_head"):
        LoraSpec.from_dict({**LORA, "target_modules": ["q_proj", "lm_head"]})
    spec = LoraSpec.from_dict({**LORA, "target_modules": ["q_proj", "v_proj"]})
    assert spec.target_modules == ("q_proj", "v_proj")
