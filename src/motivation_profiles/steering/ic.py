"""In-context pairs: judged alignment-faking scratchpads paired on the same prompt."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from motivation_profiles.rollouts.protocol import PromptSet
from motivation_profiles.steering.names import CONCEPT_DIRECTION, CONCEPTS
from motivation_profiles.steering.pair_format import (
    PAIR_COLUMNS,
    _loci,
    future_count,
    scratchpad_blocks,
)

log = logging.getLogger(__name__)


IC_KEY = ["model", "condition", "goal_id", "tier", "seed"]


# ============================================================================ IC pairs


def ic_messages(prompts: PromptSet, goal: str, tier: str,
                turns: Sequence[str]) -> list[dict[str, str]]:
    """The rollout's conversation: system + user turn, then the assistant turns with the
    continuation user turn between them."""
    msgs = prompts.messages(goal, tier)
    for turn in turns[:-1]:
        msgs = prompts.continue_messages(msgs, turn)
    if turns:
        msgs.append({"role": "assistant", "content": turns[-1]})
    return msgs


def ic_loci(turns: Sequence[str]) -> list[str]:
    """Every non-empty scratchpad block of every assistant turn, in order."""
    return [block for turn in turns for block in scratchpad_blocks(turn)]


def _usable_ic(rollouts: pd.DataFrame, judge: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    for name, df, cols in (("rollouts", rollouts, [*IC_KEY, "goal", "turns", "scratchpad"]),
                           ("judge", judge, [*IC_KEY, "a_score", "b_score"])):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"IC pairs: the {name} table lacks column(s) {missing}")
    if judge.duplicated(IC_KEY).any():
        raise ValueError("IC pairs: the judge table has several rows for one rollout "
                         f"({IC_KEY})")
    r = rollouts.reset_index(drop=True).assign(_order=lambda d: np.arange(len(d)))
    j = judge[[*IC_KEY, "a_score", "b_score"]]
    joined = r.merge(j, on=IC_KEY, how="inner", validate="many_to_one").sort_values("_order")
    joined["_turns"] = [[str(t) for t in _loci(v)] for v in joined["turns"]]
    joined["_loci"] = [ic_loci(t) for t in joined["_turns"]]
    has_scratch = (joined["scratchpad"].map(lambda s: isinstance(s, str) and bool(s.strip()))
                   & joined["_loci"].map(bool))
    scored = joined["a_score"].notna() & joined["b_score"].notna()
    usable = joined[has_scratch & scored].reset_index(drop=True)
    return usable, len(joined)


def ic_pairs(
    rollouts: pd.DataFrame,
    judge: pd.DataFrame,
    prompts: PromptSet,
    *,
    concept: str,
    high: float,
    low: float,
    max_length_ratio: float,
    n_train: int,
    n_validation: int,
    selection: str = "first",
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairs of judged AF rollouts for one concept (Appendix D.1, IC sets).

    Positives / negatives by the judge's mean scores a (researcher expectations) and b
    (retraining consequences): expectations: positive a >= high and b <= low, negative a <= low
    and b <= low; consequences: positive b >= high, negative b <= low, with a matched where
    possible. Each positive, in rollout order, takes an unused negative of the same model,
    goal and tier from a different run (condition or seed) among those whose scratchpad-length
    ratio is within ``max_length_ratio``: the nearest a score first (consequences), then the
    nearest length, then file order. ``selection``: ``first`` keeps the first
    ``n_train + n_validation`` pairs formed (the paper's file order), ``sample`` a seeded
    random subset in random order; the first ``n_train`` are ``train``, the rest
    ``validation``. Messages use ``prompts`` (the base system prompt) for every run.
    """
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; expected one of {CONCEPTS}")
    if selection not in ("first", "sample"):
        raise ValueError(f"selection must be 'first' or 'sample', got {selection!r}")
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    usable, n_joined = _usable_ic(rollouts, judge)
    a, b = usable["a_score"].astype(float), usable["b_score"].astype(float)
    if CONCEPT_DIRECTION[concept] == "a":
        pos_mask, neg_mask = (a >= high) & (b <= low), (a <= low) & (b <= low)
    else:
        pos_mask, neg_mask = b >= high, b <= low
    chars = usable["scratchpad"].str.len().to_numpy()
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in np.flatnonzero(neg_mask.to_numpy()):
        row = usable.iloc[i]
        groups.setdefault((row["model"], row["goal_id"], row["tier"]), []).append(int(i))
    used: set[int] = set()
    formed: list[tuple[int, int]] = []
    no_negative = rejected_length = 0
    for i in np.flatnonzero(pos_mask.to_numpy()):
        row = usable.iloc[i]
        run = (row["condition"], row["seed"])
        options = [j for j in groups.get((row["model"], row["goal_id"], row["tier"]), [])
                   if j not in used and j != i
                   and (usable.at[j, "condition"], usable.at[j, "seed"]) != run]
        if not options:
            no_negative += 1
            continue
        within = [j for j in options
                  if max(chars[i], chars[j]) / max(min(chars[i], chars[j]), 1)
                  <= max_length_ratio]
        if not within:
            rejected_length += 1
            continue

        def rank(j: int, i: int = int(i)) -> tuple[float, int, int]:
            da = abs(a.iat[j] - a.iat[i]) if CONCEPT_DIRECTION[concept] == "b" else 0.0
            return (da, abs(int(chars[j]) - int(chars[i])), j)

        j = min(within, key=rank)
        used.update((int(i), j))
        formed.append((int(i), j))
    order = list(range(len(formed)))
    if selection == "sample":
        order = list(np.random.default_rng(seed).permutation(len(formed)))
    chosen = [formed[k] for k in order[: n_train + n_validation]]
    if len(chosen) < n_train + n_validation:
        log.warning("IC %s: %d pairs formed, fewer than n_train + n_validation = %d", concept,
                    len(formed), n_train + n_validation)
    rows = []
    for k, (i, j) in enumerate(chosen):
        pos, neg = usable.iloc[i], usable.iloc[j]
        row: dict[str, Any] = {
            "pair_id": f"ic-{concept}-{k:05d}", "concept": concept, "source": "ic",
            "split": "train" if k < n_train else "validation",
        }
        for prefix, r in (("pos", pos), ("neg", neg)):
            row[f"{prefix}_messages"] = json.dumps(
                ic_messages(prompts, str(r["goal"]), str(r["tier"]), r["_turns"]),
                ensure_ascii=False)
            row[f"{prefix}_loci"] = list(r["_loci"])
            row[f"{prefix}_span"] = None
        row.update({"model": pos["model"], "goal_id": pos["goal_id"], "tier": pos["tier"]})
        for prefix, r in (("pos", pos), ("neg", neg)):
            row.update({f"{prefix}_condition": r["condition"], f"{prefix}_seed": r["seed"],
                        f"{prefix}_a": float(r["a_score"]), f"{prefix}_b": float(r["b_score"]),
                        f"{prefix}_chars": len(r["scratchpad"]),
                        f"{prefix}_future": future_count(r["scratchpad"])})
        rows.append(row)
    pairs = pd.DataFrame(rows)
    if pairs.empty:
        pairs = pd.DataFrame(columns=PAIR_COLUMNS)
    n_tr = int((pairs["split"] == "train").sum()) if len(pairs) else 0

    def mean(col: str) -> float:
        return float(pairs[col].mean()) if len(pairs) else float("nan")

    report = pd.DataFrame([
        ("rollouts", len(rollouts)), ("rollouts_judged", n_joined),
        ("rollouts_usable", len(usable)), ("positives", int(pos_mask.sum())),
        ("negatives_eligible", int(neg_mask.sum())),
        ("positives_without_negative", no_negative), ("rejected_length", rejected_length),
        ("pairs_formed", len(formed)), ("pairs_selected", len(pairs)), ("train", n_tr),
        ("validation", len(pairs) - n_tr), ("mean_pos_future", mean("pos_future")),
        ("mean_neg_future", mean("neg_future")),
    ], columns=["metric", "value"]).astype({"value": "float64"})
    return pairs, report
