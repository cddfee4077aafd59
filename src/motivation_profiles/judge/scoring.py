"""The scratchpad judge: Direction A (researcher expectations) and Direction B (training /
future consequences), each an integer on the rubric's anchored scale, with a quoted
justification, k samples per scratchpad and their agreement.

The rubric is a YAML file (``resources/judge/rubric.yaml``): ``name``, ``scale: {min, max}``,
``system`` and ``user_template`` (one field, ``{scratchpad}``). The judge is any
``GenerationBackend``: ``llm.HostedBackend`` (Anthropic) or ``llm.CachedBackend`` around a local
model, both behind the response cache, so a rerun asks nothing twice. Sample ``k`` of an item is
the request's seed (the cache's sample index), so the k answers are k distinct requests.

An answer that does not parse is kept raw with a null score and a status saying why
(``missing``, ``not_integer``, ``out_of_range``, ``conflicting``); nothing here raises on a
model's text.

Local judges (``judge.backend: local``) are not sampled: ``judge_rollouts_expected`` reads the
judge model's distribution over the rubric's levels. Per direction d, the context is the
rubric's messages with the assistant turn opened at ``<direction_{d}_score>`` (each direction
asked on its own, as the rubric asks them to be rated independently), and each level v is
scored as the full token sequence of ``"{v}</direction_{d}_score>"`` (so "1" and "10" are
distinct events, however many tokens a level takes). ``{d}_score`` is the expectation of the
level under those probabilities renormalised over the levels, ``{d}_argmax`` the most likely
level, and ``{d}_mass`` the probability the levels received before renormalising (low mass:
the judge does not follow the format). Sampled judges have null ``argmax`` and ``mass``;
expected ones have no votes, quotes or raw answers.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from motivation_profiles.backends.base import ChatRequest, GenerationBackend, SamplingParams
from motivation_profiles.rollouts.run import meta_schema

DIRECTIONS = ("a", "b")


QUOTE_CHARS = 500


class RubricError(ValueError):
    """A rubric file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Rubric:
    name: str
    scale_min: int
    scale_max: int
    system: str
    user_template: str
    sha256: str

    @classmethod
    def load(cls, path: str | Path) -> Rubric:
        p = Path(path)
        if not p.is_file():
            raise RubricError(f"rubric file {path} does not exist")
        data = p.read_bytes()
        try:
            doc = yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise RubricError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(doc, dict):
            raise RubricError(f"{path}: expected a mapping with name, scale, system, "
                              "user_template")
        for key in ("name", "scale", "system", "user_template"):
            if key not in doc:
                raise RubricError(f"{path}: missing key '{key}'")
        for key in ("name", "system", "user_template"):
            if not isinstance(doc[key], str) or not doc[key].strip():
                raise RubricError(f"{path}: key '{key}' must be a non-empty string")
        scale = doc["scale"]
        if not isinstance(scale, dict) or set(scale) != {"min", "max"}:
            raise RubricError(f"{path}: key 'scale' must be a mapping with exactly min and max")
        lo, hi = scale["min"], scale["max"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
            raise RubricError(f"{path}: key 'scale': min and max must be integers")
        if lo >= hi:
            raise RubricError(f"{path}: key 'scale': min ({lo}) must be below max ({hi})")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(doc["user_template"])
                      if f is not None]
        except ValueError as exc:
            raise RubricError(f"{path}: key 'user_template': {exc} (write literal braces as "
                              "'{{' and '}}')") from exc
        if fields != ["scratchpad"]:
            raise RubricError(f"{path}: key 'user_template' must contain the field "
                              f"{{scratchpad}} exactly once, found {fields}")
        return cls(doc["name"], lo, hi, doc["system"].strip(), doc["user_template"].strip(),
                   hashlib.sha256(data).hexdigest())

    def messages(self, scratchpad: str, prefill: str | None = None) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system},
                {"role": "user", "content": self.user_template.format(scratchpad=scratchpad)}]
        if prefill:
            msgs.append({"role": "assistant", "content": prefill})
        return msgs


# ----------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class JudgeParse:
    a_score: int | None
    b_score: int | None
    a_quote: str | None
    b_quote: str | None
    a_status: str
    b_status: str


def _tag(name: str) -> re.Pattern[str]:
    return re.compile(rf"<{name}>(.*?)</{name}>", re.IGNORECASE | re.DOTALL)


_SCORE = {d: _tag(f"direction_{d}_score") for d in DIRECTIONS}


_QUOTE = {d: _tag(f"direction_{d}_quote") for d in DIRECTIONS}


_NUMBER = re.compile(r"^[+-]?\d+(?:\s*/\s*\d+)?$")


def _value(raw: str) -> int | None:
    """'3', ' **3** ', '3/4' -> 3; anything else (words, 3.5, empty) -> None."""
    text = raw.strip().strip("*_`").strip()
    if not _NUMBER.fullmatch(text):
        return None
    return int(text.split("/")[0])


def _score(text: str, d: str, lo: int, hi: int) -> tuple[int | None, str]:
    raws = _SCORE[d].findall(text)
    if not raws:
        return None, "missing"
    values = [_value(r) for r in raws]
    if any(v is None for v in values):
        return None, "not_integer"
    if len(set(values)) > 1:
        return None, "conflicting"
    v = values[0]
    if not lo <= v <= hi:
        return None, "out_of_range"
    return v, "ok"


def parse_judge_answer(text: str, rubric: Rubric, prefill: str | None = None) -> JudgeParse:
    """Read both directions' scores and quotes from ``prefill + text``; never raises."""
    full = (prefill or "") + (text if isinstance(text, str) else "")
    out: dict[str, Any] = {}
    for d in DIRECTIONS:
        out[f"{d}_score"], out[f"{d}_status"] = _score(full, d, rubric.scale_min,
                                                       rubric.scale_max)
        quotes = _QUOTE[d].findall(full)
        out[f"{d}_quote"] = quotes[0].strip()[:QUOTE_CHARS] if quotes else None
    return JudgeParse(**out)


# ----------------------------------------------------------------------------- agreement


def _valid(votes: Sequence[int | None]) -> list[int]:
    return [int(v) for v in votes if v is not None and not (isinstance(v, float)
                                                            and np.isnan(v))]


def modal_agreement(votes: Sequence[int | None]) -> float | None:
    """Fraction of the valid votes equal to the most common one (None without valid votes)."""
    valid = _valid(votes)
    if not valid:
        return None
    return Counter(valid).most_common(1)[0][1] / len(valid)


def spread(votes: Sequence[int | None]) -> int | None:
    valid = _valid(votes)
    return max(valid) - min(valid) if valid else None


def krippendorff_alpha_interval(items: Sequence[Sequence[int | None]]) -> float | None:
    """Krippendorff's alpha with the interval metric; items with < 2 valid votes are not
    pairable and are dropped. None when undefined (nothing pairable, or no variation)."""
    units = [np.asarray(_valid(v), float) for v in items]
    units = [u for u in units if len(u) >= 2]
    if not units:
        return None
    allv = np.concatenate(units)
    n = len(allv)
    observed = sum(((u[:, None] - u[None, :]) ** 2).sum() / (len(u) - 1) for u in units) / n
    expected = ((allv[:, None] - allv[None, :]) ** 2).sum() / (n * (n - 1))
    if expected == 0:
        return None
    return float(1 - observed / expected)


def agreement_summary(votes_per_item: Sequence[Sequence[int | None]]) -> dict[str, Any]:
    """Agreement of k judge samples over a table of items."""
    multi = [_valid(v) for v in votes_per_item if len(_valid(v)) >= 2]
    diffs = [abs(a - b) for v in multi for i, a in enumerate(v) for b in v[i + 1:]]
    return {
        "items": len(votes_per_item),
        "items_with_2plus_valid": len(multi),
        "exact_agreement": (float(np.mean([len(set(v)) == 1 for v in multi])) if multi
                            else None),
        "mean_abs_pairwise_diff": float(np.mean(diffs)) if diffs else None,
        "krippendorff_alpha_interval": krippendorff_alpha_interval(votes_per_item),
    }


# ----------------------------------------------------------------------------- judging

ROW_KEYS = ("model", "condition", "goal_id", "tier", "seed", "outcome")


DIRECTION_SCHEMA: dict[str, pl.DataType] = {
    "score": pl.Float64, "votes": pl.List(pl.Int64), "valid": pl.Int64,
    "modal_agreement": pl.Float64, "spread": pl.Int64, "quote": pl.Utf8,
    "statuses": pl.List(pl.Utf8), "argmax": pl.Int64, "mass": pl.Float64,
}
"""Each direction's columns (``a_score`` ...) and their dtypes, in table order."""


def _status(parses: Sequence[JudgeParse]) -> str:
    a = any(p.a_score is not None for p in parses)
    b = any(p.b_score is not None for p in parses)
    return "ok" if a and b else "partial" if a or b else "unparsed"


def _judge_schema(rollouts: pl.DataFrame, meta: Mapping[str, Any]) -> dict[str, pl.DataType]:
    schema = {k: rollouts.schema[k] for k in ROW_KEYS}
    schema.update(scratchpad_chars=pl.Int64, status=pl.Utf8)
    for d in DIRECTIONS:
        schema.update({f"{d}_{c}": t for c, t in DIRECTION_SCHEMA.items()})
    return {**schema, "raw_answers": pl.List(pl.Utf8), **meta_schema(meta)}


def judge_rollouts(rollouts: pl.DataFrame, backend: GenerationBackend, rubric: Rubric, *,
                   samples: int, params: SamplingParams, prefill: str | None,
                   meta: Mapping[str, Any]) -> pl.DataFrame:
    """One row per rollout row (same order) with k-sample scores, agreement and raw answers.

    Every request of the table goes to one ``backend.generate`` call; rows without a
    scratchpad make no request (status ``no_scratchpad``). A direction without a valid vote
    has null ``{d}_score``, ``{d}_modal_agreement`` and ``{d}_spread``.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    missing = [c for c in (*ROW_KEYS, "scratchpad") if c not in rollouts.columns]
    if missing:
        raise ValueError(f"rollout table lacks column(s) {missing}")
    requests, owners = [], []
    for idx, row in enumerate(rollouts.iter_rows(named=True)):
        pad = row["scratchpad"]
        if not isinstance(pad, str) or not pad.strip():
            continue
        msgs = tuple(rubric.messages(pad, prefill))
        for k in range(samples):
            requests.append(ChatRequest(f"{row['goal_id']}-{row['tier']}-{row['seed']}-j{k}",
                                        msgs, k))
            owners.append(idx)
    answers: dict[int, list[str]] = {}
    if requests:
        for owner, c in zip(owners, backend.generate(requests, params), strict=True):
            answers.setdefault(owner, []).append((prefill or "") + c.text)
    out = []
    for idx, row in enumerate(rollouts.iter_rows(named=True)):
        pad = row["scratchpad"]
        rec: dict[str, Any] = {k: row[k] for k in ROW_KEYS}
        rec["scratchpad_chars"] = len(pad) if isinstance(pad, str) else 0
        raws = answers.get(idx, [])
        parses = [parse_judge_answer(t, rubric) for t in raws]
        rec["status"] = _status(parses) if raws else "no_scratchpad"
        for d in DIRECTIONS:
            votes = [getattr(p, f"{d}_score") for p in parses]
            valid = _valid(votes)
            rec[f"{d}_score"] = float(np.mean(valid)) if valid else None
            rec[f"{d}_votes"] = votes
            rec[f"{d}_valid"] = len(valid)
            rec[f"{d}_modal_agreement"] = modal_agreement(votes)
            rec[f"{d}_spread"] = spread(votes)
            rec[f"{d}_quote"] = next((getattr(p, f"{d}_quote") for p in parses
                                      if getattr(p, f"{d}_score") is not None), None)
            rec[f"{d}_statuses"] = [getattr(p, f"{d}_status") for p in parses]
            rec[f"{d}_argmax"] = rec[f"{d}_mass"] = None
        rec["raw_answers"] = raws
        rec.update(meta)
        out.append(rec)
    return pl.DataFrame(out, schema=_judge_schema(rollouts, meta))


def level_candidates(rubric: Rubric, direction: str) -> list[str]:
    """Each level of the rubric's scale followed by the direction's closing score tag: the
    strings whose full token sequences the expected-score judge scores."""
    return [f"{v}</direction_{direction}_score>"
            for v in range(rubric.scale_min, rubric.scale_max + 1)]


def expected_score(logprobs: Sequence[float], levels: Sequence[int]
                   ) -> tuple[float, int, float]:
    """(expectation over the levels renormalised, argmax level, total probability mass) from
    each level's sequence log-probability."""
    lp = np.asarray(logprobs, dtype=float)
    top = lp.max()
    w = np.exp(lp - top)
    probs = w / w.sum()
    return (float(np.dot(probs, levels)), int(levels[int(np.argmax(lp))]),
            float(np.exp(top) * w.sum()))


def judge_rollouts_expected(rollouts: pl.DataFrame, backend: Any, rubric: Rubric, *,
                            meta: Mapping[str, Any]) -> pl.DataFrame:
    """One row per rollout row (same order), each direction's score the expectation under the
    judge model's probabilities of the rubric's levels (module docstring); ``backend`` must
    have ``continuation_logprobs`` (a local hf or vllm backend). Status ``ok``, or
    ``no_scratchpad``, or ``too_long`` when a scratchpad and the rubric leave no room to score
    in the judge's context (scores null)."""
    if not callable(getattr(backend, "continuation_logprobs", None)):
        raise ValueError("probability-weighted judge scores need a backend with token "
                         "log-probabilities (hf or vllm)")
    missing = [c for c in (*ROW_KEYS, "scratchpad") if c not in rollouts.columns]
    if missing:
        raise ValueError(f"rollout table lacks column(s) {missing}")
    levels = list(range(rubric.scale_min, rubric.scale_max + 1))
    scored: dict[tuple[int, str], list[float] | None] = {}
    for d in DIRECTIONS:
        requests, owners = [], []
        for idx, row in enumerate(rollouts.iter_rows(named=True)):
            pad = row["scratchpad"]
            if not isinstance(pad, str) or not pad.strip():
                continue
            msgs = tuple(rubric.messages(pad, f"<direction_{d}_score>"))
            requests.append(ChatRequest(f"{row['goal_id']}-{row['tier']}-{row['seed']}-{d}",
                                        msgs, 0, prompt_overflow="length"))
            owners.append(idx)
        if requests:
            lps = backend.continuation_logprobs(requests, level_candidates(rubric, d))
            scored.update({(idx, d): lp for idx, lp in zip(owners, lps, strict=True)})
    out = []
    for idx, row in enumerate(rollouts.iter_rows(named=True)):
        pad = row["scratchpad"]
        rec: dict[str, Any] = {k: row[k] for k in ROW_KEYS}
        rec["scratchpad_chars"] = len(pad) if isinstance(pad, str) else 0
        asked = [(d, scored[(idx, d)]) for d in DIRECTIONS if (idx, d) in scored]
        rec["status"] = ("no_scratchpad" if not asked
                         else "too_long" if any(lp is None for _, lp in asked) else "ok")
        for d in DIRECTIONS:
            lp = scored.get((idx, d))
            score, top, mass = expected_score(lp, levels) if lp is not None else (None,) * 3
            rec.update({f"{d}_score": score, f"{d}_votes": [], f"{d}_valid": 0,
                        f"{d}_modal_agreement": None, f"{d}_spread": None, f"{d}_quote": None,
                        f"{d}_statuses": [], f"{d}_argmax": top, f"{d}_mass": mass})
        rec["raw_answers"] = []
        rec.update(meta)
        out.append(rec)
    return pl.DataFrame(out, schema=_judge_schema(rollouts, meta))


__all__ = ["DIRECTIONS", "JudgeParse", "Rubric", "RubricError", "agreement_summary",
           "expected_score", "judge_rollouts", "judge_rollouts_expected",
           "krippendorff_alpha_interval", "level_candidates", "modal_agreement",
           "parse_judge_answer", "spread"]
