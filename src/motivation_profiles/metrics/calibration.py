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
import pandas as pd

from motivation_profiles.metrics.profiles import prompt_effects
from motivation_profiles.prompts.claims import family_of

SIGNALS = {"gap": "gap", "monitored": "monitored_compliance"}


SELECTION_COLUMNS = ["model", "checkpoint", "family", "signal", "value", "reference",
                     "reference_value", "qualifies", "selected", "model_qualifies"]


def checkpoint_family(branch: str) -> str:
    """``B1_amp`` / ``B1_amp-strong`` / ``A2_sup+self`` -> the intervention family."""
    return family_of(branch.removesuffix("+self").partition("-")[0])


def select_checkpoints(metrics: pd.DataFrame, *, model: str, reference: str,
                       candidates: Sequence[str], signal: str,
                       max_per_family: int | None) -> pd.DataFrame:
    """Apply the Appendix C.1 rule to one model's per-condition metrics.

    ``metrics`` has one row per condition (``metrics`` rule output) with ``condition`` and the
    signal column (``gap`` or ``monitored_compliance``). A candidate qualifies when its value is
    at or above the reference's; the model qualifies when both families have a qualifying
    candidate, and then the qualifying ones are selected (ranked by value, then name, capped at
    ``max_per_family`` per family when set). Returns one row per candidate.
    """
    if signal not in SIGNALS:
        raise ValueError(f"calibration signal {signal!r}: expected one of {sorted(SIGNALS)}")
    column = SIGNALS[signal]
    values = metrics.set_index("condition")[column]
    if reference not in values.index:
        raise ValueError(f"{model}: no metrics for the calibration reference {reference!r}")
    ref = float(values[reference])
    rows = []
    for branch in candidates:
        cond = f"sdf-{branch}"
        if cond not in values.index:
            raise ValueError(f"{model}: no metrics for calibration candidate {cond!r}")
        value = float(values[cond])
        rows.append({"model": model, "checkpoint": branch, "family": checkpoint_family(branch),
                     "signal": signal, "value": value, "reference": reference,
                     "reference_value": ref,
                     "qualifies": bool(np.isfinite(value) and value >= ref - 1e-12)})
    df = pd.DataFrame(rows, columns=SELECTION_COLUMNS[:-2])
    families = set(df.loc[df["qualifies"], "family"])
    model_ok = {"A", "B"} <= families
    df["selected"] = False
    if model_ok:
        for _, group in df[df["qualifies"]].groupby("family"):
            ranked = group.sort_values(["value", "checkpoint"], ascending=[False, True])
            keep = ranked.index if max_per_family is None else ranked.index[:max_per_family]
            df.loc[keep, "selected"] = True
    df["model_qualifies"] = model_ok
    return df[SELECTION_COLUMNS]


def calibration_effects(rollouts: pd.DataFrame, selection: pd.DataFrame, *,
                        interventions: Sequence[str], strengths: Sequence[str], n_boot: int,
                        level: float, seed: int) -> pd.DataFrame:
    """Prompt effects on every selected checkpoint and on the base model, with ``recovered``.

    ``rollouts`` holds the base model's ``baseline`` and ``prompt-*`` conditions and, for each
    selected checkpoint c, ``sdf-c`` and ``sdf-c@prompt-*``. The bootstrap uses the same seed
    for every checkpoint, so with the same goals every table sees the same resampled goals.
    """
    model = selection["model"].iloc[0] if len(selection) else rollouts["model"].iloc[0]
    chosen = selection[selection["selected"]]
    tables = [prompt_effects(rollouts, interventions=interventions, strengths=strengths,
                             n_boot=n_boot, level=level, seed=seed).assign(
                                 checkpoint_family="base")]
    for branch, family in zip(chosen["checkpoint"], chosen["family"], strict=True):
        tables.append(prompt_effects(rollouts, interventions=interventions,
                                     strengths=strengths, n_boot=n_boot, level=level,
                                     seed=seed, checkpoint=branch)
                      .assign(checkpoint_family=family))
    df = pd.concat(tables, ignore_index=True)
    df["model"] = model
    df["recovered"] = recovered(df, strength=strengths[0]) if len(chosen) else None
    return df


def consequence_share(effects: pd.DataFrame) -> pd.Series:
    """S_B - S_A per checkpoint (index: checkpoint, None for the base model -> "base")."""
    s = effects[effects["quantity"].isin(["S_A", "S_B"])]
    wide = s.assign(checkpoint=s["checkpoint"].fillna("base")).pivot_table(
        index="checkpoint", columns="quantity", values="estimate", aggfunc="first")
    return wide["S_B"] - wide["S_A"]


def recovered(effects: pd.DataFrame, *, strength: str) -> bool | None:
    """Whether the consequence share is higher on B-family checkpoints than on A-family ones
    (strictly; ties, e.g. all-zero effects, are not a recovery). None without both families."""
    df = effects[(effects["strength"] == strength) & effects["checkpoint"].notna()]
    if df.empty:
        return None
    share = consequence_share(df)
    fam = df.drop_duplicates("checkpoint").set_index("checkpoint")["checkpoint_family"]
    a, b = share[fam[fam == "A"].index], share[fam[fam == "B"].index]
    if a.empty or b.empty:
        return None
    return bool(b.mean() > a.mean())
