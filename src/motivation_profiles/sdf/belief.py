"""Belief check: did the documents take? Log-likelihood of the key fact vs. its negation.

For each paraphrase of the key fact and of its negation (from the universe file), the summed
and per-token log-probability of the statement as plain text (after BOS, as the training
documents are plain text) under the base model, the model organism and the branch's adapter.
The margin mean(log p(fact)) - mean(log p(negation)) should grow from base / organism to the
adapter if SDF installed the belief. This is a check the paper does not report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from motivation_profiles.sdf.materials import Universe, apply_name

BELIEF_SCHEMA = {"universe": pl.Utf8, "checkpoint": pl.Utf8, "kind": pl.Utf8,
                 "paraphrase": pl.Int64, "text": pl.Utf8, "n_tokens": pl.Int64,
                 "logprob": pl.Float64, "logprob_per_token": pl.Float64, "margin": pl.Float64}


def statement_logprobs(model, tokenizer, texts: Sequence[str]) -> list[tuple[int, float]]:
    """(number of scored tokens, summed log-probability) of each text, one forward each."""
    import torch

    out = []
    bos = tokenizer.bos_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos is not None and bos != tokenizer.eos_token_id:
            ids = [bos] + ids  # every token of the text is scored
        # (without a BOS the first token has no context and is not scored)
        x = torch.tensor([ids], device=model.device)
        with torch.inference_mode():
            logits = model(input_ids=x).logits.float()
        logp = torch.log_softmax(logits[0, :-1], dim=-1)
        lp = logp.gather(1, x[0, 1:, None])[:, 0]
        out.append((int(lp.numel()), float(lp.sum())))
    return out


def belief_table(model_dir: str | Path, universe: Universe, *, adapter: str | Path,
                 organism: str | Path | None, dtype: str, device: str,
                 rename: Sequence[str] | None = None) -> pl.DataFrame:
    """Rows per (checkpoint, kind, paraphrase); ``margin`` per checkpoint repeated on its rows."""
    from peft import PeftModel

    from motivation_profiles.models.load import load_model

    statements = [("fact", i, s) for i, s in enumerate(universe.belief_fact)]
    statements += [("negation", i, s) for i, s in enumerate(universe.belief_negation)]
    if rename:
        statements = [(k, i, apply_name(s, *rename)) for k, i, s in statements]
    base, tok = load_model(model_dir, dtype=dtype, device=device)
    model = PeftModel.from_pretrained(base, str(adapter), adapter_name="adapter")
    checkpoints = ["base", "adapter"]
    if organism is not None:
        model.load_adapter(str(organism), adapter_name="organism")
        checkpoints.insert(1, "organism")
    model.eval()
    rows = []
    for ckpt in checkpoints:
        texts = [s for _, _, s in statements]
        if ckpt == "base":
            with model.disable_adapter():
                scores = statement_logprobs(model, tok, texts)
        else:
            model.set_adapter(ckpt)
            scores = statement_logprobs(model, tok, texts)
        for (kind, i, text), (n, lp) in zip(statements, scores, strict=True):
            rows.append({"universe": universe.id, "checkpoint": ckpt, "kind": kind,
                         "paraphrase": i, "text": text, "n_tokens": n, "logprob": lp,
                         "logprob_per_token": lp / n})
    margin = _margins(rows)
    return pl.DataFrame([{**r, "margin": margin[r["checkpoint"]]} for r in rows],
                        schema=BELIEF_SCHEMA)


def _margins(rows: Sequence[dict]) -> dict[str, float]:
    """Per checkpoint: mean log p per token of the fact minus that of the negation."""
    def mean_of(ckpt: str, kind: str) -> float:
        return _mean(r["logprob_per_token"] for r in rows
                     if r["checkpoint"] == ckpt and r["kind"] == kind)

    return {c: mean_of(c, "fact") - mean_of(c, "negation")
            for c in dict.fromkeys(r["checkpoint"] for r in rows)}


def _mean(values: Iterable[float]) -> float:
    """The mean of the non-NaN values, Kahan-compensated summation in the given order: bit for
    bit the group mean pandas computed here before (``pivot_table(aggfunc="mean")``)."""
    total = comp = 0.0
    n = 0
    for v in values:
        if v != v:  # NaN: skipped, as pandas did
            continue
        y = v - comp
        t = total + y
        comp = (t - total) - y
        if comp != comp:  # an infinite sum: no compensation (as pandas)
            comp = 0.0
        total = t
        n += 1
    return total / n if n else math.nan
