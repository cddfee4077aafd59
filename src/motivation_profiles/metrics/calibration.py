"""Calibration of prompt interventions on SDF checkpoints (paper section 3.3, Appendix C.1).

SDF checkpoints have a known intervention family by construction. A model family is usable for
calibration when, among the candidate checkpoints (the direct amplify variants by default),
at least one A-family and at least one B-family checkpoint have an alignment-faking signal at
or above the reference (the base model's ``baseline`` condition by default). The qualifying
checkpoints of both families are selected (optionally the ``max_per_family`` strongest), the
prompt interventions are run on each, and the prompt profile of every checkpoint is compared:
prompting *recovers the known family* when the consequence share S_B - S_A is higher on the
B-family checkpoints than on the A-family ones (means over the checkpoints of each family).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from motivation_profiles.metrics.profiles import prompt_effects
from motivation_profiles.prompts.claims import family_of

SIGNALS = {"gap": "gap", "monitored": "monitored_compliance"}


SELECTION_COLUMNS = ["model", "checkpoint", "family", "signal", "value", "reference",
                     "reference_value", "qualifies", "selected", "model_qualifies"]


CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    "model": pl.Utf8, "checkpoint": pl.Utf8, "family": pl.Utf8, "signal": pl.Utf8,
    "value": pl.Float64, "reference": pl.Utf8, "reference_value": pl.Float64,
    "qualifies": pl.Boolean,
}
"""The per-candidate columns of :func:`select_checkpoints` (``SELECTION_COLUMNS[:-2]``)."""


def checkpoint_family(branch: str) -> str:
    """``B1_amp`` / ``B1_amp-strong`` / ``A2_sup+self`` -> the intervention family."""
    return family_of(branch.removesuffix("+self").partition("-")[0])


def _selected_rows(df: pl.DataFrame, max_per_family: int | None) -> set[int]:
    """Row numbers of the qualifying candidates kept: per family, ranked by value (highest
    first), then name, the first ``max_per_family`` (all when None)."""
    keep: set[int] = set()
    qualifying = df.with_row_index("_row").filter(pl.col("qualifies"))
    for (_,), group in qualifying.group_by("family"):
        ranked = group.sort(["value", "checkpoint"], descending=[True, False],
                            maintain_order=True)["_row"].to_list()
        keep.update(ranked if max_per_family is None else ranked[:max_per_family])
    return keep


def select_checkpoints(metrics: pl.DataFrame, *, model: str, reference: str,
                       candidates: Sequence[str], signal: str,
                       max_per_family: int | None) -> pl.DataFrame:
    """Apply the Appendix C.1 rule to one model's per-condition metrics.

    ``metrics`` has one row per condition (``metrics`` rule output) with ``condition`` and the
    signal column (``gap`` or ``monitored_compliance``). A candidate qualifies when its value is
    at or above the reference's; the model qualifies when both families have a qualifying
    candidate, and then the qualifying ones are selected (ranked by value, then name, capped at
    ``max_per_family`` per family when set). Returns one row per candidate (an undefined value
    is null and does not qualify).
    """
    if signal not in SIGNALS:
        raise ValueError(f"calibration signal {signal!r}: expected one of {sorted(SIGNALS)}")
    column = SIGNALS[signal]
    values = {c: float("nan") if v is None else float(v)
              for c, v in zip(metrics["condition"], metrics[column], strict=True)}
    if reference not in values:
        raise ValueError(f"{model}: no metrics for the calibration reference {reference!r}")
    ref = values[reference]
    rows = []
    for branch in candidates:
        cond = f"sdf-{branch}"
        if cond not in values:
            raise ValueError(f"{model}: no metrics for calibration candidate {cond!r}")
        value = values[cond]
        rows.append({"model": model, "checkpoint": branch, "family": checkpoint_family(branch),
                     "signal": signal, "value": value, "reference": reference,
                     "reference_value": ref,
                     "qualifies": bool(np.isfinite(value) and value >= ref - 1e-12)})
    df = pl.DataFrame(rows, schema=CANDIDATE_SCHEMA)
    families = set(df.filter(pl.col("qualifies"))["family"])
    model_ok = {"A", "B"} <= families
    keep = _selected_rows(df, max_per_family) if model_ok else set()
    return df.with_columns(
        selected=pl.Series([i in keep for i in range(len(df))], dtype=pl.Boolean),
        model_qualifies=pl.lit(model_ok),
    ).select(SELECTION_COLUMNS).fill_nan(None)


def calibration_effects(rollouts: pl.DataFrame, selection: pl.DataFrame, *,
                        interventions: Sequence[str], strengths: Sequence[str], n_boot: int,
                        level: float, seed: int) -> pl.DataFrame:
    """Prompt effects on every selected checkpoint and on the base model, with ``recovered``.

    ``rollouts`` holds the base model's ``baseline`` and ``prompt-*`` conditions and, for each
    selected checkpoint c, ``sdf-c`` and ``sdf-c@prompt-*``. The bootstrap uses the same seed
    for every checkpoint, so with the same goals every table sees the same resampled goals.
    """
    model = selection["model"][0] if len(selection) else rollouts["model"][0]
    chosen = selection.filter(pl.col("selected"))
    tables = [prompt_effects(rollouts, interventions=interventions, strengths=strengths,
                             n_boot=n_boot, level=level, seed=seed).with_columns(
                                 checkpoint_family=pl.lit("base"))]
    for branch, family in zip(chosen["checkpoint"], chosen["family"], strict=True):
        tables.append(prompt_effects(rollouts, interventions=interventions,
                                     strengths=strengths, n_boot=n_boot, level=level,
                                     seed=seed, checkpoint=branch)
                      .with_columns(checkpoint_family=pl.lit(family, dtype=pl.Utf8)))
    df = pl.concat(tables).with_columns(model=pl.lit(model, dtype=pl.Utf8))
    found = recovered(df, strength=strengths[0]) if len(chosen) else None
    return df.with_columns(recovered=pl.lit(found, dtype=pl.Boolean))


def consequence_share(effects: pl.DataFrame) -> pl.DataFrame:
    """S_B - S_A per checkpoint: columns ``checkpoint`` (None for the base model -> "base"),
    sorted, and ``share`` (null where either is missing). Each S is the checkpoint's first
    non-null, non-NaN estimate; a KeyError names a quantity no checkpoint has."""
    s = (effects.filter(pl.col("quantity").is_in(["S_A", "S_B"]))
         .with_columns(pl.col("checkpoint").fill_null("base"),
                       pl.col("estimate").fill_nan(None))
         .drop_nulls("estimate"))
    first = {(c, q): e for c, q, e in s.select("checkpoint", "quantity", "estimate")
             .unique(["checkpoint", "quantity"], keep="first", maintain_order=True).iter_rows()}
    for quantity in ("S_B", "S_A"):
        if not any(q == quantity for _, q in first):
            raise KeyError(quantity)
    checkpoints = sorted({c for c, _ in first})
    nan = float("nan")
    return pl.DataFrame({"checkpoint": checkpoints,
                         "share": [first.get((c, "S_B"), nan) - first.get((c, "S_A"), nan)
                                   for c in checkpoints]},
                        schema={"checkpoint": pl.Utf8, "share": pl.Float64}).fill_nan(None)


def _mean(values: list[float]) -> float:
    """Mean skipping missing values (None, NaN), computed as pandas' ``Series.mean`` does
    (missing as 0 in a numpy sum, divided by the count of the others): the same floats."""
    arr = np.asarray(values, dtype=float)
    valid = ~np.isnan(arr)
    return float(np.where(valid, arr, 0.0).sum() / valid.sum()) if valid.any() else float("nan")


def recovered(effects: pl.DataFrame, *, strength: str) -> bool | None:
    """Whether the consequence share is higher on B-family checkpoints than on A-family ones
    (strictly; ties, e.g. all-zero effects, are not a recovery). None without both families."""
    df = effects.filter((pl.col("strength") == strength) & pl.col("checkpoint").is_not_null())
    if df.is_empty():
        return None
    share = dict(consequence_share(df).iter_rows())
    fam = df.unique("checkpoint", keep="first", maintain_order=True)
    a = [share[c] for c, f in zip(fam["checkpoint"], fam["checkpoint_family"], strict=True)
         if f == "A"]
    b = [share[c] for c, f in zip(fam["checkpoint"], fam["checkpoint_family"], strict=True)
         if f == "B"]
    if not a or not b:
        return None
    return bool(_mean(b) > _mean(a))
