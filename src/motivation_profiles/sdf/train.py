"""LoRA training on packed SDF datasets (peft + accelerate), resumable and seeded.

One optimizer step consumes ``gradient_accumulation_steps`` micro-batches of
``per_device_batch_size`` packed rows per process; the loss is the token-weighted mean over
every non-masked label of the step (``num_items_in_batch``), so accumulation does not change
the objective. A micro-batch is padded with a separate run of position ids and labels -100,
and no attention mask is passed: transformers then builds a block-diagonal causal mask from
the restarting position ids, so no packed document attends to another.

The data order of epoch e is a permutation seeded by (seed, e), so the position in the data is
a function of the step alone. Every ``save_every_steps`` steps the full training state
(adapter, optimizer, scheduler, RNG states, via ``accelerator.save_state``) and the loss
history go to ``work_dir``; a rerun with the same ``resume_key`` continues from there and
ends with the same weights as an uninterrupted run.

``init_adapter`` continues training an existing adapter (the model organism), so every SDF
checkpoint is one standard PEFT adapter on the base model, servable by vLLM as one LoRARequest.
Several GPUs: ``launch`` runs this module under ``accelerate launch`` (FSDP config in
resources/accelerate/).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..provenance import read_table, write_manifest, write_table

log = logging.getLogger(__name__)

# Module names vLLM's LoRA support accepts for Llama / Qwen2 decoder layers.
VLLM_LORA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                               "down_proj"})
STATE_FILE = "training_state.json"


class TrainingInterrupted(RuntimeError):
    """Raised after ``stop_after_steps`` steps (a simulated kill; the checkpoint is saved)."""


def _from_dict(cls, d: Mapping[str, Any], what: str):
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    missing = names - set(d)
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {sorted(unknown)}")
    if missing:
        raise ValueError(f"{what}: missing key(s) {sorted(missing)}")
    return cls(**d)


@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    dropout: float
    target_modules: str | tuple[str, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoraSpec:
        d = dict(d)
        if isinstance(d.get("target_modules"), list):
            d["target_modules"] = tuple(d["target_modules"])
        return _from_dict(cls, d, "sdf.lora")


@dataclass(frozen=True)
class TrainSpec:
    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    epochs: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    weight_decay: float
    max_grad_norm: float
    seed: int
    gradient_checkpointing: bool
    dtype: str
    save_every_steps: int
    log_every_steps: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainSpec:
        spec = _from_dict(cls, dict(d), "sdf.training")
        if spec.lr_scheduler not in ("cosine", "linear", "constant"):
            raise ValueError(f"sdf.training.lr_scheduler: unknown {spec.lr_scheduler!r}")
        if spec.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"sdf.training.dtype: unknown {spec.dtype!r}")
        return spec


def collate(rows: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad packed rows to one length; the padding is its own position run, label -100."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids, labels, pos = [], [], []
    for r in rows:
        n = len(r["input_ids"])
        ids.append(list(r["input_ids"]) + [pad_id] * (width - n))
        labels.append(list(r["labels"]) + [-100] * (width - n))
        pos.append(list(r["position_ids"]) + list(range(width - n)))
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
            "position_ids": torch.tensor(pos)}


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def _latest_checkpoint(work_dir: Path) -> Path | None:
    found = sorted(work_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


def target_module_names(model, target_modules: str | Sequence[str]) -> list[str]:
    """Short module names for the adapter config. ``all-linear`` becomes the names of every
    linear layer in the decoder (not lm_head), written as short names (q_proj, ...) as vLLM's
    LoRA loader expects, instead of peft's per-layer paths."""
    import torch

    if target_modules != "all-linear":
        return list(target_modules)
    names = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
             if isinstance(mod, torch.nn.Linear) and ".layers." in f".{name}"}
    return sorted(names)


def _load_model(model_dir, lora: LoraSpec, train: TrainSpec, init_adapter):
    import torch
    from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if train.dtype == "bfloat16" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if train.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.enable_input_require_grads()
    base.config.use_cache = False
    torch.manual_seed(train.seed)  # deterministic LoRA init
    if init_adapter is None:
        cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=target_module_names(base, lora.target_modules),
                         task_type="CAUSAL_LM")
        return get_peft_model(base, cfg)
    init = PeftConfig.from_pretrained(str(init_adapter))
    if (init.r, float(init.lora_alpha)) != (lora.rank, float(lora.alpha)):
        raise ValueError(
            f"init adapter {init_adapter} has rank {init.r}, alpha {init.lora_alpha}; the "
            f"configured sdf.lora asks for rank {lora.rank}, alpha {lora.alpha}. A continued "
            "adapter keeps its shape: make sdf.lora match the organism's")
    model = PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
    for module in model.modules():  # the configured dropout applies to continued training too
        if hasattr(module, "lora_dropout"):
            for name, drop in module.lora_dropout.items():
                if isinstance(drop, torch.nn.Dropout):
                    module.lora_dropout[name] = torch.nn.Dropout(lora.dropout)
    return model


def train_lora(model_dir: str | Path, dataset: str | Path, output_dir: str | Path, *,
               lora: LoraSpec | Mapping[str, Any], train: TrainSpec | Mapping[str, Any],
               init_adapter: str | Path | None = None, work_dir: str | Path,
               device: str = "cpu", provenance: Mapping[str, Any] | None = None,
               resume_key: str, stop_after_steps: int | None = None) -> pd.DataFrame:
    """Train (or continue) one LoRA adapter; returns the loss curve. See the module docstring."""
    import torch
    from accelerate import Accelerator
    from transformers import AutoTokenizer, get_scheduler

    lora = lora if isinstance(lora, LoraSpec) else LoraSpec.from_dict(lora)
    train = train if isinstance(train, TrainSpec) else TrainSpec.from_dict(train)
    rows = read_table(dataset)
    if rows.empty:
        raise ValueError(f"{dataset}: the packed dataset has no rows")
    records = rows[["input_ids", "labels", "position_ids"]].to_dict("records")
    work_dir, output_dir = Path(work_dir), Path(output_dir)

    on_gpu = device != "cpu" and torch.cuda.is_available()
    accelerator = Accelerator(cpu=not on_gpu,
                              mixed_precision="bf16" if (on_gpu and train.dtype == "bfloat16")
                              else "no")
    tok = AutoTokenizer.from_pretrained(model_dir)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = _load_model(model_dir, lora, train, init_adapter)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train.learning_rate,
                                  weight_decay=train.weight_decay)
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step_rows = train.per_device_batch_size * world
    micro_per_epoch = math.ceil(len(records) / per_step_rows)  # micro-batches per process
    steps_per_epoch = math.ceil(micro_per_epoch / train.gradient_accumulation_steps)
    total = steps_per_epoch * train.epochs
    scheduler = get_scheduler(train.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(train.warmup_ratio * total),
                              num_training_steps=total)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    step, history = 0, []
    ckpt = _latest_checkpoint(work_dir) if work_dir.exists() else None
    if ckpt is not None:
        state = json.loads((ckpt / STATE_FILE).read_text())
        if state.get("resume_key") == resume_key:
            _load_checkpoint(ckpt, accelerator.unwrap_model(model), optimizer, scheduler)
            step, history = int(state["step"]), list(state["history"])
            log.info("resuming from %s (step %d of %d)", ckpt, step, total)
        else:
            log.info("discarding checkpoint %s: it was made for other inputs or settings", ckpt)
            if accelerator.is_main_process:
                shutil.rmtree(work_dir)
    log.info("training: %d rows, %d processes, %d optimizer steps (%d per epoch), %d epochs",
             len(records), world, total, steps_per_epoch, train.epochs)

    def save_checkpoint() -> None:
        accelerator.wait_for_everyone()
        adapter = accelerator.get_state_dict(model)  # gathered (FSDP) on every process
        if not accelerator.is_main_process:
            return
        work_dir.mkdir(parents=True, exist_ok=True)
        tmp = work_dir / f".checkpoint-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _save_checkpoint(tmp, accelerator.unwrap_model(model), adapter, optimizer, scheduler)
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, "resume_key": resume_key,
                                                  "history": history}))
        for old in work_dir.glob("checkpoint-*"):
            shutil.rmtree(old)
        os.replace(tmp, work_dir / f"checkpoint-{step}")

    model.train()
    while step < total:
        epoch, k = divmod(step, steps_per_epoch)
        order = epoch_order(len(records), train.seed, epoch)
        first = k * train.gradient_accumulation_steps
        micro = [order[(m * per_step_rows) + rank * train.per_device_batch_size:
                       (m * per_step_rows) + (rank + 1) * train.per_device_batch_size]
                 for m in range(first, min(first + train.gradient_accumulation_steps,
                                           micro_per_epoch))]
        micro = [m for m in micro if len(m)]
        batches = [collate([records[i] for i in m], pad_id) for m in micro]
        n_items = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        n_items = int(accelerator.reduce(torch.tensor(n_items, device=accelerator.device),
                                         reduction="sum").item()) if world > 1 else n_items
        t0 = time.perf_counter()
        loss_sum = 0.0
        for j, batch in enumerate(batches):
            batch = {key: v.to(accelerator.device) for key, v in batch.items()}
            sync = j == len(batches) - 1
            ctx = accelerator.no_sync(model) if not sync else _nullcontext()
            with ctx:
                out = model(**batch, attention_mask=None, use_cache=False,
                            num_items_in_batch=max(n_items, 1))
                loss = out.loss * world  # DDP averages gradients over processes
                accelerator.backward(loss)
            loss_sum += float(out.loss.detach())
        grad_norm = accelerator.clip_grad_norm_(params, train.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        history.append({"step": step, "epoch": epoch, "loss": loss_sum, "learning_rate": lr,
                        "grad_norm": float(grad_norm), "tokens": n_items,
                        "seconds": time.perf_counter() - t0})
        if step % train.log_every_steps == 0 or step == total:
            log.info("step %d/%d epoch %d loss %.4f lr %.3g grad-norm %.3f", step, total,
                     epoch, loss_sum, lr, float(grad_norm))
        if step < total and (step % train.save_every_steps == 0 or step == stop_after_steps):
            save_checkpoint()
        if stop_after_steps is not None and step == stop_after_steps and step < total:
            raise TrainingInterrupted(f"stopped after {step} steps (checkpoint saved)")

    curve = pd.DataFrame(history)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        tmp = output_dir.parent / f".{output_dir.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
        write_table(curve, tmp / "loss_curve.parquet", provenance or {})
        write_manifest(tmp, {"init_adapter": str(init_adapter) if init_adapter else None,
                             "steps": total, "lora": asdict(lora)})
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
        shutil.rmtree(work_dir, ignore_errors=True)
    return curve


def _save_checkpoint(path: Path, peft_model, state_dict, optimizer, scheduler) -> None:
    """Adapter weights (safetensors), optimizer and scheduler state and the torch RNG state
    (LoRA dropout; data order does not use global RNGs). Only the trainable LoRA weights are
    stored, not the base model."""
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    adapter = get_peft_model_state_dict(peft_model, state_dict=state_dict)
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.items()},
              path / "adapter.safetensors")
    # Optimizer moments and RNG states are torch objects: torch.save, read back with
    # weights_only=True (no arbitrary unpickling). They live only until training ends.
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
               path / "trainer_state.pt")


def _load_checkpoint(path: Path, peft_model, optimizer, scheduler) -> None:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(peft_model, load_file(path / "adapter.safetensors"))
    state = torch.load(path / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"]:
        torch.cuda.set_rng_state_all(state["cuda_rng"])


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------------ launching
def launch(spec: Mapping[str, Any], num_processes: int,
           accelerate_config: str | Path | None) -> None:
    """Run ``train_lora(**spec)`` in this process, or under ``accelerate launch`` with one
    process per GPU when ``num_processes`` > 1 (``accelerate_config``: FSDP settings)."""
    if num_processes <= 1:
        train_lora(**spec)
        return
    if accelerate_config is None:
        raise ValueError("training on more than one GPU needs sdf.training.accelerate_config")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(dict(spec), fh)
        spec_path = fh.name
    try:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(accelerate_config), "--num_processes", str(num_processes), "-m",
               "motivation_profiles.sdf.train", spec_path]
        log.info("launching: %s", " ".join(cmd))
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                              os.environ.get("PYTHONPATH", "")])}
        subprocess.run(cmd, check=True, env=env)
    finally:
        os.unlink(spec_path)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m motivation_profiles.sdf.train SPEC.json")
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    train_lora(**json.loads(Path(args[0]).read_text()))


if __name__ == "__main__":
    main()
