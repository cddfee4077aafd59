"""LoRA training on packed SDF datasets (peft + accelerate): seeded, resumable, one adapter.

Objective. One optimizer step consumes ``gradient_accumulation_steps`` micro-batches of
``per_device_batch_size`` packed rows on each process. The loss is the token-weighted mean
over every non-masked label of the step on all processes (``num_items_in_batch``), so neither
gradient accumulation, nor the number of processes, nor padding changes the objective.

Packing. A micro-batch is right-padded to its longest row; the padding is its own run of
position ids (0, 1, 2, ...) with labels -100, and no attention mask is passed. transformers then
builds a block-diagonal causal mask from the restarting position ids
(``masking_utils.find_packed_sequence_indices``; only when ``attention_mask is None`` and there
is no KV cache, hence ``use_cache=False``), so no packed document attends to another or to the
padding.

Order and resume. The rows of epoch e are visited in a permutation drawn from
``numpy.random.default_rng([seed, e])``, so which rows an optimizer step sees is a function of
the step number alone. Every ``save_every_steps`` steps ``accelerator.save_state`` writes the
trainable (LoRA) weights, optimizer, scheduler and every process's RNG states (LoRA dropout)
to ``work_dir/checkpoint-<step>`` (written under a temporary name, then renamed; only the
latest is kept), next to ``training_state.json`` (step, epoch, position in the epoch, the loss
history, ``resume_key`` and the size of every checkpoint file). A rerun with the same
``resume_key`` loads it and continues at the next step, and ends with the same weights as an
uninterrupted run. A checkpoint with another key is discarded, and so is one whose state cannot
be used (truncated or not JSON, wrong shape, a listed file missing or of another size): with a
warning naming the file, training starts again from step 0, never a crash.

Outputs are deterministic: two identical trainings write identical bytes (hence one manifest
hash). ``adapter_config.json`` has its set-valued lists (``target_modules``...) sorted, and the
stored ``loss_curve.parquet`` leaves out wall-clock ``seconds`` (returned, and logged) and the
SLURM job id of its provenance.

Continuation. ``init_adapter`` continues training an existing adapter (the model organism),
so every SDF checkpoint is ONE standard PEFT adapter on the base model, servable by vLLM as one
LoRARequest. Its rank, alpha and target modules are the init adapter's; a differing
``LoraSpec`` is an error.

Several GPUs. ``launch`` runs this module under ``accelerate launch`` with one process per
GPU (FSDP config: resources/accelerate/fsdp.yaml). Only the main process writes outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.core.io import write_json_atomic, write_text_atomic
from motivation_profiles.core.provenance import (
    display_path,
    read_table,
    write_manifest,
    write_table,
)
from motivation_profiles.core.specs import spec_from_mapping

log = logging.getLogger(__name__)


IGNORE = -100


# Module names vLLM's LoRA support accepts for Llama / Qwen2 decoder layers.
VLLM_LORA_MODULES = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                               "down_proj"})


STATE_FILE = "training_state.json"


CHECKPOINT = "checkpoint-"


DATASET_COLUMNS = ("input_ids", "labels", "position_ids")


CURVE_SCHEMA = {"step": pl.Int64, "epoch": pl.Int64, "loss": pl.Float64,
                "learning_rate": pl.Float64, "grad_norm": pl.Float64, "tokens": pl.Int64,
                "seconds": pl.Float64}


class TrainingInterrupted(RuntimeError):
    """Raised after ``stop_after_steps`` optimizer steps, once the checkpoint is saved (this is
    how tests simulate a killed job)."""


# ------------------------------------------------------------------------------ specs
@dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    dropout: float
    target_modules: str | tuple[str, ...]  # "all-linear" or module names (q_proj, ...)

    def __post_init__(self) -> None:
        """Only what the schema cannot say: explicit module names must be servable by vLLM."""
        if isinstance(self.target_modules, str):
            if self.target_modules != "all-linear":
                raise ValueError("sdf.lora.target_modules: 'all-linear' or a list of names, "
                                 f"got {self.target_modules!r}")
            return
        tm = tuple(self.target_modules)
        bad = sorted(set(tm) - VLLM_LORA_MODULES)
        if bad:
            raise ValueError(f"sdf.lora.target_modules: {', '.join(bad)} cannot be served by "
                             f"vLLM's LoRA (it takes {', '.join(sorted(VLLM_LORA_MODULES))})")
        object.__setattr__(self, "target_modules", tm)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoraSpec:
        return spec_from_mapping(cls, d, "sdf.lora")


@dataclass(frozen=True)
class TrainSpec:
    learning_rate: float
    lr_scheduler: str  # cosine | linear | constant
    warmup_ratio: float
    epochs: int
    per_device_batch_size: int
    gradient_accumulation_steps: int
    weight_decay: float
    max_grad_norm: float
    seed: int
    gradient_checkpointing: bool
    dtype: str  # float32 | bfloat16
    save_every_steps: int
    log_every_steps: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainSpec:
        return spec_from_mapping(cls, d, "sdf.training")


# ------------------------------------------------------------------------------ data
def collate(rows: Sequence[Mapping[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad packed rows to the longest one. The padding is a separate "document": its
    position ids are their own run 0, 1, 2, ... and its labels are -100."""
    import torch

    lengths = [len(r["input_ids"]) for r in rows]
    width = max(lengths)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
    pos = np.empty((len(rows), width), dtype=np.int64)
    for i, (r, n) in enumerate(zip(rows, lengths, strict=True)):
        if len(r["labels"]) != n or len(r["position_ids"]) != n:
            raise ValueError(f"packed row {i}: input_ids, labels and position_ids differ in "
                             "length")
        ids[i, :n] = r["input_ids"]
        labels[i, :n] = r["labels"]
        pos[i, :n] = r["position_ids"]
        pos[i, n:] = np.arange(width - n)
    return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(pos)}


def loss_tokens(batch: Mapping[str, Any]) -> int:
    """Labels that enter the loss (the model shifts labels left by one)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def forward_loss(model, batch: Mapping[str, Any], num_items_in_batch: int):
    """Sum of the batch's token losses / ``num_items_in_batch``. ``attention_mask=None`` and no
    cache: transformers derives the block-diagonal mask of the packed documents from the
    restarting ``position_ids``."""
    return model(input_ids=batch["input_ids"], labels=batch["labels"],
                 position_ids=batch["position_ids"], attention_mask=None, use_cache=False,
                 num_items_in_batch=num_items_in_batch).loss


def epoch_order(n_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the rows in ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


@dataclass(frozen=True)
class Plan:
    """Which rows each optimizer step and process sees. A global micro-batch is
    ``batch * world`` consecutive rows of the epoch's order, process r taking its r-th
    ``batch``; an optimizer step takes ``accum`` global micro-batches (the epoch's last step
    may take fewer)."""

    n_rows: int
    world: int
    batch: int
    accum: int
    epochs: int

    @property
    def micro_per_epoch(self) -> int:
        return math.ceil(self.n_rows / (self.batch * self.world))

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_per_epoch / self.accum)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, optimizer steps already done in it) before 0-based ``step``."""
        return divmod(step, self.steps_per_epoch)

    def micro_batches(self, step: int, rank: int, order: np.ndarray) -> list[np.ndarray]:
        """Row indices of each micro-batch of 0-based optimizer ``step`` on process ``rank``
        (possibly empty at the end of an epoch on some processes)."""
        _, k = self.position(step)
        rows = self.batch * self.world
        first = k * self.accum
        return [order[m * rows + rank * self.batch: m * rows + (rank + 1) * self.batch]
                for m in range(first, min(first + self.accum, self.micro_per_epoch))]

    def rows_done(self, step: int) -> int:
        """Rows of the current epoch consumed (all processes) before 0-based ``step``."""
        _, k = self.position(step)
        return min(k * self.accum * self.batch * self.world, self.n_rows)


def _read_dataset(dataset: str | Path) -> list[dict[str, np.ndarray]]:
    table = read_table(dataset)
    missing = [c for c in DATASET_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{dataset}: packed dataset lacks column(s) {', '.join(missing)}")
    if table.is_empty():
        raise ValueError(f"{dataset}: the packed dataset has no rows; nothing to train on")
    records = [{c: np.asarray(r[c], dtype=np.int64) for c in DATASET_COLUMNS}
               for r in table.select(list(DATASET_COLUMNS)).iter_rows(named=True)]
    for i, r in enumerate(records):
        n = len(r["input_ids"])
        if n == 0 or len(r["labels"]) != n or len(r["position_ids"]) != n:
            raise ValueError(f"{dataset}: row {i} is empty or its input_ids, labels and "
                             "position_ids differ in length")
    return records


# ------------------------------------------------------------------------------ model
def resolve_target_modules(model, target_modules: str | Sequence[str]) -> list[str]:
    """Short module names for the adapter config. ``all-linear`` becomes the short names of
    every ``nn.Linear`` except the output head (peft's own expansion writes full per-layer
    paths; vLLM's loader expects q_proj, ...). The result must be servable by vLLM."""
    import torch

    if target_modules != "all-linear":
        names = sorted(set(target_modules))
    else:
        head = model.get_output_embeddings()
        names = sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                        if isinstance(mod, torch.nn.Linear) and mod is not head})
    bad = sorted(set(names) - VLLM_LORA_MODULES)
    if bad:
        raise ValueError(f"sdf.lora.target_modules: {target_modules!r} would adapt "
                         f"{', '.join(bad)}, which vLLM's LoRA cannot serve for this model")
    return names


def _build_model(model_dir, lora: LoraSpec, train: TrainSpec, init_adapter):
    """The base model (on CPU; ``accelerator.prepare`` places it) with one trainable LoRA."""
    import torch
    from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if train.dtype == "bfloat16" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    base.config.use_cache = False
    if train.gradient_checkpointing:
        # non-reentrant checkpointing works with frozen inputs; enable_input_require_grads
        # covers the reentrant variant too, should a model force it.
        kwargs = {"use_reentrant": False}
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.2x
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        base.enable_input_require_grads()
    targets = resolve_target_modules(base, lora.target_modules)
    torch.manual_seed(train.seed)  # deterministic LoRA init (and dropout stream)
    if init_adapter is None:
        cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=targets, task_type="CAUSAL_LM")
        return get_peft_model(base, cfg)
    init = PeftConfig.from_pretrained(str(init_adapter))
    have = (init.r, float(init.lora_alpha), sorted(init.target_modules or []))
    want = (lora.rank, float(lora.alpha), targets)
    if have != want:
        raise ValueError(
            f"init adapter {init_adapter} has rank {have[0]}, alpha {have[1]:g}, target "
            f"modules {have[2]}, but sdf.lora asks for rank {want[0]}, alpha {want[1]:g}, "
            f"target modules {want[2]}: a continued adapter keeps the init adapter's shape, so "
            "make sdf.lora match the model organism's")
    init.lora_dropout = lora.dropout  # dropout is a training setting: the configured one
    init.inference_mode = False
    return PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True, config=init)


def _pad_id(config) -> int:
    """Any token id will do for padding: it is its own position run with labels -100, so no
    real token attends to it and it enters no loss. Prefer the model's pad, then eos."""
    for tid in (config.pad_token_id, config.eos_token_id, 0):
        if isinstance(tid, list | tuple):
            tid = tid[0] if tid else None
        if tid is not None:
            return int(tid)
    return 0


def _rng_fingerprint(cuda: bool) -> str:
    """Hash of this process's torch generator states (CPU, and CUDA when training on it)."""
    import torch

    h = hashlib.sha256(torch.get_rng_state().numpy().tobytes())
    if cuda:
        for s in torch.cuda.get_rng_state_all():
            h.update(s.numpy().tobytes())
    return h.hexdigest()


def _register_adapter_only_state(accelerator) -> None:
    """Make ``save_state``/``load_state`` store only the trainable (LoRA) weights of the model
    (not the frozen base: GBs per checkpoint), and load them strictly. Under FSDP accelerate
    saves the sharded model itself and these hooks see no weights."""
    from safetensors.torch import load_file

    def trainable(model) -> set[str]:
        # names as in the state dict accelerate saves for this very object (wrapped or not)
        return {name for name, p in model.named_parameters() if p.requires_grad}

    def save_hook(models, weights, output_dir):
        for i, w in enumerate(weights):
            keep = trainable(models[i])
            weights[i] = {k: v for k, v in w.items() if k in keep}
            if len(weights[i]) != len(keep):
                raise RuntimeError(f"checkpoint: found {len(weights[i])} of the {len(keep)} "
                                   "trainable weights in the model's state dict")

    def load_hook(models, input_dir):
        for i, m in enumerate(models):
            path = Path(input_dir) / ("model.safetensors" if i == 0 else f"model_{i}.safetensors")
            sd = load_file(path)
            if set(sd) != trainable(m):
                raise RuntimeError(f"{path}: holds {len(sd)} tensors, not the "
                                   f"{len(trainable(m))} trainable LoRA weights of this model")
            m.load_state_dict(sd, strict=False)
        models.clear()  # loaded here; accelerate must not load them again

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def _gathered_adapter_state(accelerator, model) -> dict | None:
    """Under FSDP: the trainable weights gathered in full to the CPU (only those, not the
    frozen base; collective, every process calls it). Otherwise None (save_pretrained reads
    the unwrapped model)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(
        full_state_dict=True, cpu_offload=True, ignore_frozen_params=True))


def check_adapter_config(adapter_dir: str | Path) -> list[str]:
    """The adapter's target modules; raises unless vLLM's LoRA can serve all of them."""
    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    targets = cfg.get("target_modules")
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    bad = sorted(set(targets) - VLLM_LORA_MODULES)
    if not targets or bad:
        raise RuntimeError(f"{adapter_dir}: adapter_config.json targets {targets}; vLLM's LoRA "
                           f"accepts only {sorted(VLLM_LORA_MODULES)}")
    return targets


# ------------------------------------------------------------------------------ checkpoints
def _checkpoints(work_dir: Path) -> list[Path]:
    found = [p for p in work_dir.glob(f"{CHECKPOINT}*")
             if p.is_dir() and p.name[len(CHECKPOINT):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT):]))


def _plan_dict(plan: Plan) -> dict[str, int]:
    return asdict(plan)


def read_training_state(ckpt: Path) -> tuple[dict[str, Any], str]:
    """(the checkpoint's training state, "") or ({}, why it cannot be used: the state file
    missing, truncated, not JSON, of the wrong shape, or a checkpoint file it lists missing or
    of another size), the problem naming the path."""
    path = ckpt / STATE_FILE
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return {}, f"training state {path} is missing"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return {}, f"training state {path} is unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(state, dict):
        return {}, f"training state {path} is a JSON {type(state).__name__}, not an object"
    bad = [k for k, t in _STATE_FIELDS.items()
           if not isinstance(state.get(k), t) or (t is int and isinstance(state[k], bool))]
    if not bad and state["step"] < 1:
        bad = ["step"]
    if not bad and (len(state["history"]) != state["step"]
                    or not all(isinstance(h, dict) and set(CURVE_SCHEMA) <= set(h)
                               for h in state["history"])):
        bad = ["history"]
    if bad:
        return {}, f"training state {path}: field(s) {', '.join(bad)} missing or malformed"
    for name, size in state["files"].items():
        f = ckpt / name
        if not f.is_file() or f.stat().st_size != size:
            return {}, f"checkpoint file {f} is missing or not the {size} bytes saved"
    return state, ""


_STATE_FIELDS: dict[str, type] = {
    "resume_key": str, "step": int, "epoch": int, "steps_done_in_epoch": int,
    "rows_done_in_epoch": int, "plan": dict, "rng": str, "history": list, "files": dict,
}


# ------------------------------------------------------------------------------ outputs
UNORDERED_CONFIG_LISTS = ("target_modules", "exclude_modules", "modules_to_save")
"""adapter_config.json fields that are sets (peft writes them in set order, which changes with
the hash seed): written sorted."""


def canonical_adapter_config(adapter_dir: str | Path) -> None:
    """Rewrite ``adapter_config.json`` with its set-valued lists sorted (and keys sorted, as
    peft writes them), so identical trainings give identical bytes."""
    path = Path(adapter_dir) / "adapter_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for name in UNORDERED_CONFIG_LISTS:
        if isinstance(cfg.get(name), list):
            cfg[name] = sorted(set(cfg[name]))
    write_text_atomic(path, json.dumps(cfg, indent=2, sort_keys=True) + "\n")


CURVE_FILE_COLUMNS = [c for c in CURVE_SCHEMA if c != "seconds"]
"""The loss curve as stored in the adapter: wall-clock seconds are left out (logged instead),
so the adapter's files, and its manifest hash, are a function of its inputs."""

JOB_SPECIFIC = ("slurm_job_id",)


def stable_provenance(provenance: Mapping[str, Any]) -> dict[str, Any]:
    """``provenance`` without what differs between two identical runs (the SLURM job id)."""
    return {k: v for k, v in provenance.items() if k not in JOB_SPECIFIC}


# ------------------------------------------------------------------------------ training
def train_lora(model_dir: str | Path, dataset: str | Path, output_dir: str | Path, *,
               lora: LoraSpec | Mapping[str, Any], train: TrainSpec | Mapping[str, Any],
               init_adapter: str | Path | None = None, work_dir: str | Path,
               device: str = "cpu", provenance: Mapping[str, Any] | None = None,
               resume_key: str, stop_after_steps: int | None = None) -> pl.DataFrame:
    """Train a LoRA adapter (or continue ``init_adapter``) on a packed dataset.

    Writes the adapter (``adapter_model.safetensors``, ``adapter_config.json``), its loss curve
    ``loss_curve.parquet`` and ``manifest.json`` to ``output_dir`` (atomically) and returns the
    loss curve: one row per optimizer step with step, epoch (0-based), loss, learning_rate,
    grad_norm, tokens (loss tokens) and seconds (not stored: see the module docstring).
    ``work_dir`` holds resumable checkpoints and is removed at the end.
    """
    import torch
    from accelerate import Accelerator
    from transformers import get_scheduler

    from motivation_profiles.models.load import resolve_device

    lora = lora if isinstance(lora, LoraSpec) else LoraSpec.from_dict(lora)
    train = train if isinstance(train, TrainSpec) else TrainSpec.from_dict(train)
    if stop_after_steps is not None and stop_after_steps < 1:
        raise ValueError(f"stop_after_steps must be >= 1, got {stop_after_steps}")
    records = _read_dataset(dataset)
    work_dir, output_dir = Path(work_dir), Path(output_dir)

    on_gpu = resolve_device(device) != "cpu"
    accelerator = Accelerator(
        cpu=not on_gpu,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        mixed_precision="bf16" if (on_gpu and train.dtype == "bfloat16") else "no",
        # the schedule below counts optimizer steps of all processes together; by default
        # accelerate would step the scheduler once per process per optimizer step
        step_scheduler_with_optimizer=False,
    )
    main = accelerator.is_main_process
    say = log.info if main else log.debug  # progress from the main process only
    on_cuda = accelerator.device.type == "cuda"
    world, rank = accelerator.num_processes, accelerator.process_index
    model = _build_model(model_dir, lora, train, init_adapter)
    pad_id = _pad_id(model.config)

    plan = Plan(n_rows=len(records), world=world, batch=train.per_device_batch_size,
                accum=train.gradient_accumulation_steps, epochs=train.epochs)
    total = plan.total_steps
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=train.learning_rate, weight_decay=train.weight_decay)
    scheduler = get_scheduler(train.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(train.warmup_ratio * total),
                              num_training_steps=total)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    _register_adapter_only_state(accelerator)

    # ---- resume
    step, history = 0, []
    if main and work_dir.is_dir():
        for stale in work_dir.glob(".tmp-*"):  # a save that was killed half-way
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    found = _checkpoints(work_dir) if work_dir.is_dir() else []
    if found:
        ckpt = found[-1]
        state, problem = read_training_state(ckpt)
        if problem:  # unreadable resume state is recomputed, never a crash
            if main:
                log.warning("%s; discarding checkpoint %s, training from step 0", problem, ckpt)
        elif state["resume_key"] == resume_key and state["plan"] == _plan_dict(plan):
            accelerator.load_state(str(ckpt))
            if main and _rng_fingerprint(on_cuda) != state["rng"]:
                raise RuntimeError(f"{ckpt}: the random number generator states were not "
                                   "restored; resuming would not reproduce the run")
            step, history = int(state["step"]), list(state["history"])
            say("resuming from %s: step %d of %d (epoch %d, %d rows into it)", ckpt, step,
                total, state["epoch"], state["rows_done_in_epoch"])
        else:
            why = ("another resume_key (other inputs or settings)"
                   if state["resume_key"] != resume_key else "another batch layout")
            say("discarding checkpoint %s: it was made for %s", ckpt, why)
        if not step:  # not resumed: start afresh
            accelerator.wait_for_everyone()
            if main:
                shutil.rmtree(work_dir, ignore_errors=True)
            accelerator.wait_for_everyone()
    say("training %s: %d rows, %d process(es), %d optimizer steps (%d per epoch, %d epochs), "
        "from step %d", display_path(dataset), len(records), world, total,
        plan.steps_per_epoch, train.epochs, step)

    def save_checkpoint() -> None:
        epoch, k = plan.position(step)
        tmp = work_dir / f".tmp-{CHECKPOINT}{step}"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            work_dir.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp), safe_serialization=True)
        accelerator.wait_for_everyone()
        if main:
            files = {str(f.relative_to(tmp)): f.stat().st_size
                     for f in sorted(tmp.rglob("*")) if f.is_file()}
            write_json_atomic(tmp / STATE_FILE, {
                "resume_key": resume_key, "step": step, "epoch": epoch,
                "steps_done_in_epoch": k, "rows_done_in_epoch": plan.rows_done(step),
                "plan": _plan_dict(plan), "rng": _rng_fingerprint(on_cuda), "history": history,
                "files": files,
            })
            final = work_dir / f"{CHECKPOINT}{step}"
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in _checkpoints(work_dir):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
            say("checkpoint %s", final)
        accelerator.wait_for_everyone()

    # ---- train
    model.train()
    ga_scale = accelerator.gradient_accumulation_steps  # accelerator.backward divides by it
    orders: dict[int, np.ndarray] = {}
    steps_here = 0
    while step < total:
        t0 = time.perf_counter()
        epoch, _ = plan.position(step)
        if epoch not in orders:
            orders = {epoch: epoch_order(len(records), train.seed, epoch)}
        batches = []
        for idx in plan.micro_batches(step, rank, orders[epoch]):
            if len(idx):
                batches.append(collate([records[i] for i in idx], pad_id))
            else:  # this process has no rows left in the epoch: a zero-loss stand-in keeps
                b = collate([records[int(orders[epoch][0])]], pad_id)  # collectives in step
                b["labels"].fill_(IGNORE)
                batches.append(b)
        n_items = sum(loss_tokens(b) for b in batches)
        if world > 1:
            n_items = int(accelerator.reduce(torch.tensor(n_items, device=accelerator.device),
                                             reduction="sum").item())
        loss_sum = torch.zeros((), device=accelerator.device)
        for j, b in enumerate(batches):
            b = {key: v.to(accelerator.device) for key, v in b.items()}
            last = j == len(batches) - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                loss = forward_loss(model, b, max(n_items, 1))
                # x world: DDP/FSDP average gradients over processes; the loss is already
                # normalized by the global token count
                accelerator.backward(loss * (world * ga_scale))
            loss_sum += loss.detach().float()
        if world > 1:
            loss_sum = accelerator.reduce(loss_sum, reduction="sum")
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), train.max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        lr = float(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_here += 1
        history.append({"step": step, "epoch": epoch, "loss": float(loss_sum.item()),
                        "learning_rate": lr, "grad_norm": float(grad_norm), "tokens": n_items,
                        "seconds": time.perf_counter() - t0})
        if step % train.log_every_steps == 0 or step == total:
            h = history[-1]
            say("step %d/%d epoch %d loss %.4f lr %.3g grad-norm %.3f %.0f loss-tokens/s",
                step, total, epoch, h["loss"], lr, h["grad_norm"],
                n_items / max(h["seconds"], 1e-9))
        stopping = stop_after_steps is not None and steps_here >= stop_after_steps
        if step < total and (step % train.save_every_steps == 0 or stopping):
            save_checkpoint()
        if stopping and step < total:
            raise TrainingInterrupted(f"stopped after {steps_here} optimizer step(s), at step "
                                      f"{step} of {total}; checkpoint saved in {work_dir}")

    # ---- outputs (main process only)
    curve = pl.DataFrame(history, schema=CURVE_SCHEMA)
    accelerator.wait_for_everyone()
    adapter_state = _gathered_adapter_state(accelerator, model)
    if main:
        tmp = output_dir.parent / f".{output_dir.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        kwargs = {} if adapter_state is None else {"state_dict": adapter_state}
        accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True, **kwargs)
        canonical_adapter_config(tmp)
        check_adapter_config(tmp)
        write_table(curve.select(CURVE_FILE_COLUMNS), tmp / "loss_curve.parquet",
                    stable_provenance(provenance or {}))
        write_manifest(tmp, {
            "kind": "lora_adapter", "steps": total, "lora": asdict(lora), "train": asdict(train),
            "init_adapter": display_path(init_adapter) if init_adapter else None,
        })
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(tmp, output_dir)
        shutil.rmtree(work_dir, ignore_errors=True)
        say("adapter written to %s (final loss %.4f, %.1f s in optimizer steps)", output_dir,
            curve["loss"][-1] if len(curve) else float("nan"), float(curve["seconds"].sum()))
    accelerator.wait_for_everyone()
    return curve
