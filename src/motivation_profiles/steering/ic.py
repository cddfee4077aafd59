"""In-context pairs: judged alignment-faking scratchpads paired on the same prompt."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.rollouts.protocol import PromptSet
from motivation_profiles.steering.names import CONCEPT_DIRECTION, CONCEPTS
from motivation_profiles.steering.pair_format import (
    PAIR_COLUMNS,
    PAIR_SCHEMA,
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


def _usable_ic(rollouts: pl.DataFrame, judge: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The judged rollouts with a scratchpad and both scores, in rollout order, with their
    turns (``_turns``) and scratchpad blocks (``_loci``); and how many were judged."""
    for name, df, cols in (("rollouts", rollouts, [*IC_KEY, "goal", "turns", "scratchpad"]),
                           ("judge", judge, [*IC_KEY, "a_score", "b_score"])):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"IC pairs: the {name} table lacks column(s) {missing}")
    if judge.select(IC_KEY).is_duplicated().any():
        raise ValueError("IC pairs: the judge table has several rows for one rollout "
                         f"({IC_KEY})")
    # keys are matched by value (the judge's key columns take the rollouts' types)
    scores = judge.select(*(pl.col(k).cast(rollouts.schema[k]) for k in IC_KEY),
                          "a_score", "b_score")
    joined = (rollouts.with_row_index("_order")
              .join(scores, on=IC_KEY, how="inner", validate="m:1", nulls_equal=True)
              .sort("_order").drop("_order"))
    turns = [[str(t) for t in _loci(v)] for v in joined["turns"].to_list()]
    loci = [ic_loci(t) for t in turns]
    has_scratch = [isinstance(s, str) and bool(s.strip()) and bool(blocks)
                   for s, blocks in zip(joined["scratchpad"].to_list(), loci, strict=True)]
    joined = joined.with_columns(pl.Series("_turns", turns, dtype=pl.List(pl.Utf8)),
                                 pl.Series("_loci", loci, dtype=pl.List(pl.Utf8)))
    scored = [pl.col(c).cast(pl.Float64).fill_nan(None).is_not_null()
              for c in ("a_score", "b_score")]
    usable = joined.filter(pl.Series(has_scratch, dtype=pl.Boolean), *scored)
    return usable, len(joined)


def _cuts(a: np.ndarray, b: np.ndarray, high: float, low: float,
          quantiles: Mapping[str, float] | None) -> dict[str, float]:
    """The score thresholds per direction: ``high`` / ``low`` themselves, or the
    ``quantiles`` levels of that direction's scores (NaN when there are none)."""
    out = {}
    for d, scores in (("a", a), ("b", b)):
        for side, score in (("high", high), ("low", low)):
            if quantiles is None:
                out[f"{d}_{side}"] = float(score)
            else:
                out[f"{d}_{side}"] = (float(np.quantile(scores, quantiles[side]))
                                      if len(scores) else math.nan)
    return out


def _ic_schema(usable: pl.DataFrame) -> dict[str, pl.DataType]:
    """Column types of the IC pairs table, in the order ``ic_pairs`` writes a row."""
    schema: dict[str, pl.DataType] = {c: PAIR_SCHEMA[c] for c in PAIR_COLUMNS[:4]}
    for prefix in ("pos", "neg"):
        schema.update({f"{prefix}_{c}": PAIR_SCHEMA[f"{prefix}_{c}"]
                       for c in ("messages", "loci", "span")})
    schema.update({c: usable.schema[c] for c in ("model", "goal_id", "tier")})
    for prefix in ("pos", "neg"):
        schema.update({f"{prefix}_condition": usable.schema["condition"],
                       f"{prefix}_seed": usable.schema["seed"], f"{prefix}_a": pl.Float64,
                       f"{prefix}_b": pl.Float64, f"{prefix}_chars": pl.Int64,
                       f"{prefix}_future": pl.Int64})
    return schema


def ic_pairs(
    rollouts: pl.DataFrame,
    judge: pl.DataFrame,
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
    quantiles: Mapping[str, float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
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

    ``quantiles`` (``{high, low}`` levels in [0, 1]; None: the paper's scores ``high`` and
    ``low``): the thresholds are those quantiles of the usable rollouts' own scores, per
    direction (a judge whose expected scores crowd the middle of the scale, like a small local
    one, then still yields its highest- and lowest-scored scratchpads). The score cut points
    used are in the report (``a_high`` ... ``b_low``).
    """
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}; expected one of {CONCEPTS}")
    if selection not in ("first", "sample"):
        raise ValueError(f"selection must be 'first' or 'sample', got {selection!r}")
    if low >= high:
        raise ValueError(f"low ({low}) must be below high ({high})")
    if quantiles is not None and not 0 <= quantiles["low"] < quantiles["high"] <= 1:
        raise ValueError(f"quantiles need 0 <= low < high <= 1, got {dict(quantiles)}")
    usable, n_joined = _usable_ic(rollouts, judge)
    a = usable["a_score"].cast(pl.Float64).to_numpy()
    b = usable["b_score"].cast(pl.Float64).to_numpy()
    cuts = _cuts(a, b, high, low, quantiles)
    a_hi, a_lo, b_hi, b_lo = (cuts[k] for k in ("a_high", "a_low", "b_high", "b_low"))
    if CONCEPT_DIRECTION[concept] == "a":
        pos_mask, neg_mask = (a >= a_hi) & (b <= b_lo), (a <= a_lo) & (b <= b_lo)
    else:
        pos_mask, neg_mask = b >= b_hi, b <= b_lo
    chars = np.asarray([len(s) for s in usable["scratchpad"].to_list()], dtype=np.int64)
    rows_of = usable.to_dicts()
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in np.flatnonzero(neg_mask):
        row = rows_of[i]
        groups.setdefault((row["model"], row["goal_id"], row["tier"]), []).append(int(i))
    used: set[int] = set()
    formed: list[tuple[int, int]] = []
    no_negative = rejected_length = 0
    for i in np.flatnonzero(pos_mask):
        row = rows_of[i]
        run = (row["condition"], row["seed"])
        options = [j for j in groups.get((row["model"], row["goal_id"], row["tier"]), [])
                   if j not in used and j != i
                   and (rows_of[j]["condition"], rows_of[j]["seed"]) != run]
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
            da = abs(a[j] - a[i]) if CONCEPT_DIRECTION[concept] == "b" else 0.0
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
        pos, neg = rows_of[i], rows_of[j]
        row: dict[str, Any] = {
            "pair_id": f"ic-{concept}-{k:05d}", "concept": concept, "source": "ic",
            "split": "train" if k < n_train else "validation",
        }
        for prefix, r in (("pos", pos), ("neg", neg)):
            row[f"{prefix}_messages"] = ic_messages(prompts, str(r["goal"]), str(r["tier"]),
                                                    r["_turns"])
            row[f"{prefix}_loci"] = list(r["_loci"])
            row[f"{prefix}_span"] = None
        row.update({"model": pos["model"], "goal_id": pos["goal_id"], "tier": pos["tier"]})
        for prefix, r in (("pos", pos), ("neg", neg)):
            row.update({f"{prefix}_condition": r["condition"], f"{prefix}_seed": r["seed"],
                        f"{prefix}_a": float(r["a_score"]), f"{prefix}_b": float(r["b_score"]),
                        f"{prefix}_chars": len(r["scratchpad"]),
                        f"{prefix}_future": future_count(r["scratchpad"])})
        rows.append(row)
    pairs = pl.DataFrame(rows, schema=_ic_schema(usable))
    if pairs.is_empty():
        pairs = pairs.select(PAIR_COLUMNS)
    n_tr = int((pairs["split"] == "train").sum())

    def mean(col: str) -> float | None:
        # the mean of no pairs is missing (null, as the table was always written)
        return float(pairs[col].mean()) if len(pairs) else None

    report = pl.DataFrame([
        ("rollouts", len(rollouts)), ("rollouts_judged", n_joined),
        ("rollouts_usable", len(usable)), ("positives", int(pos_mask.sum())),
        ("negatives_eligible", int(neg_mask.sum())),
        ("positives_without_negative", no_negative), ("rejected_length", rejected_length),
        ("pairs_formed", len(formed)), ("pairs_selected", len(pairs)), ("train", n_tr),
        ("validation", len(pairs) - n_tr), ("mean_pos_future", mean("pos_future")),
        ("mean_neg_future", mean("neg_future")), *cuts.items(),
    ], schema={"metric": pl.Utf8, "value": pl.Float64}, orient="row")
    return pairs, report
