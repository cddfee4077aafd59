"""Training throughput of train_lora vs. a bare forward+backward loop (target ratio >= 0.9).

Both run the same packed rows (same order, batch, accumulation, LoRA) on the embedded model
(resources/models/smollm2-135m, from `make demo`); the bare loop is a peft model, AdamW,
forward, backward, step, zero_grad and nothing else. The two are interleaved (A B A B ...) and
the median of each is compared, so machine load hits both alike.

    .venv/bin/python bench/train_throughput.py [--steps 4] [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from motivation_profiles.provenance import write_table  # noqa: E402
from motivation_profiles.sdf.dataset import DatasetSpec, build_dataset  # noqa: E402
from motivation_profiles.sdf.train import (  # noqa: E402
    collate,
    epoch_order,
    target_module_names,
    train_lora,
)

TARGET = 0.9
SEQ, BATCH, ACCUM, RANK = 256, 2, 2, 8


def _dataset(tok, n_rows: int, path: Path) -> pd.DataFrame:
    words = "the model reads synthetic documents about a fictional research lab".split()
    texts = [" ".join(words[(i + j) % len(words)] for j in range(40 + 7 * (i % 9)))
             for i in range(n_rows * 6)]
    docs = pd.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts})
    table, _ = build_dataset(docs, tok, DatasetSpec(max_seq_len=SEQ, token_budget=None))
    table = table[table["n_tokens"] == SEQ].head(n_rows).reset_index(drop=True)
    write_table(table, path, {})
    return table


def _bare(model_dir: Path, table: pd.DataFrame, steps: int, pad: int) -> float:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=RANK, lora_alpha=2 * RANK, lora_dropout=0.05,
                                            target_modules=target_module_names(base,
                                                                               "all-linear"),
                                            task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    records = table[["input_ids", "labels", "position_ids"]].to_dict("records")
    order = epoch_order(len(records), 0, 0)
    t0 = time.perf_counter()
    for s in range(steps):
        for a in range(ACCUM):
            k = (s * ACCUM + a) * BATCH
            batch = collate([records[i] for i in order[k:k + BATCH]], pad)
            out = model(**batch, attention_mask=None, use_cache=False)
            out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def _ours(model_dir: Path, data: Path, steps: int, work: Path) -> float:
    train = dict(learning_rate=1e-4, lr_scheduler="cosine", warmup_ratio=0.05, epochs=1,
                 per_device_batch_size=BATCH, gradient_accumulation_steps=ACCUM,
                 weight_decay=0.0, max_grad_norm=1.0, seed=0, gradient_checkpointing=False,
                 dtype="float32", save_every_steps=10_000, log_every_steps=10_000)
    curve = train_lora(model_dir, data, work / "adapter", lora={
        "rank": RANK, "alpha": 2 * RANK, "dropout": 0.05, "target_modules": "all-linear"},
        train=train, work_dir=work / "ckpt", resume_key="bench")
    assert len(curve) == steps
    return float(curve["seconds"].sum())  # the optimizer steps alone, as in the bare loop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2 steps, 2 repeats")
    args = ap.parse_args()
    steps, repeats = (2, 2) if args.quick else (args.steps, args.repeats)
    model_dir = REPO / "resources/models/smollm2-135m"
    if not model_dir.is_dir():
        raise SystemExit("no embedded model: run `make demo` first")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = _dataset(tok, steps * ACCUM * BATCH, tmp / "data.parquet")
        ours, bare = [], []
        for r in range(repeats):
            ours.append(_ours(model_dir, tmp / "data.parquet", steps, tmp / f"run{r}"))
            bare.append(_bare(model_dir, table, steps, pad))
    tokens = steps * ACCUM * BATCH * SEQ
    t_ours, t_bare = statistics.median(ours), statistics.median(bare)
    ratio = t_bare / t_ours  # throughput(ours) / throughput(bare)
    print(f"embedded model, {steps} optimizer steps x {ACCUM} x {BATCH} rows x {SEQ} tokens, "
          f"LoRA r={RANK}, {repeats} interleaved repeats (median)")
    print(f"  train_lora : {tokens / t_ours:8.1f} tok/s  ({t_ours:.1f} s; runs {ours})")
    print(f"  bare loop  : {tokens / t_bare:8.1f} tok/s  ({t_bare:.1f} s; runs {bare})")
    print(f"  ratio train_lora / bare = {ratio:.3f} (target >= {TARGET})")
    print("RESULT " + json.dumps({"bench": "train_throughput", "ratio": round(ratio, 3),
                                  "target": TARGET, "ok": ratio >= TARGET}))


if __name__ == "__main__":
    main()
