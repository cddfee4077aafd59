"""Alignment-faking rollouts: one row per (goal, tier, seed), with every turn kept.

The loop is backend-agnostic: it renders conversations, asks a ``GenerationBackend`` for the
next assistant turn of every unfinished rollout, continues a turn that ended without
``</OUTPUT>`` with the continuation user turn (``<NEXT/>``) up to ``max_turns``, and parses the
outcome. Work is done and checkpointed per (tier, seed) group, so a killed job resumes from the
groups it finished.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from motivation_profiles.backends.base import ChatRequest, GenerationBackend, SamplingParams
from motivation_profiles.core.hashing import canonical_json
from motivation_profiles.core.io import write_json_atomic
from motivation_profiles.core.provenance import read_table, write_table
from motivation_profiles.rollouts.parsing import (
    has_complete_output,
    parse_transcript,
    strip_think,
    visible_turns,
)
from motivation_profiles.rollouts.protocol import TIERS, PromptSet, prompt_hash

log = logging.getLogger(__name__)


TURN_SEPARATOR = "\n"


ROW_SCHEMA: dict[str, pl.DataType] = {
    "goal_id": pl.Int64, "goal": pl.Utf8, "tier": pl.Utf8, "seed": pl.Int64,
    "prompt_hash": pl.Utf8, "turns": pl.List(pl.Utf8), "finish_reasons": pl.List(pl.Utf8),
    "n_turns": pl.Int64, "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64,
    "transcript": pl.Utf8, "scratchpad": pl.Utf8, "final_output": pl.Utf8,
    "output_complete": pl.Boolean, "outcome": pl.Utf8, "accepted_then_refused": pl.Boolean,
}
"""The dtype of every rollout column; the ``meta`` columns come first (:func:`_frame`)."""


@dataclass
class _Rollout:
    goal_id: int
    goal: str
    tier: str
    seed: int
    messages: list[dict[str, str]]
    prompt_hash: str
    turns: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    done: bool = False

    @property
    def request_id(self) -> str:
        return f"{self.goal_id}-{self.tier}-{self.seed}"

    @property
    def transcript(self) -> str:
        return TURN_SEPARATOR.join(self.turns)

    def visible(self, reasoning: bool) -> str:
        """The transcript as parsed: think blocks stripped from each turn when ``reasoning``."""
        return TURN_SEPARATOR.join(visible_turns(self.turns, reasoning))


def _run_group(backend: GenerationBackend, prompts: PromptSet, rollouts: list[_Rollout],
               params: SamplingParams, max_turns: int, prefill: str | None = None,
               reasoning: bool = False) -> None:
    for turn in range(max_turns):
        active = [r for r in rollouts if not r.done]
        if not active:
            return
        lead = prefill if (prefill and turn == 0) else ""
        opening = ({"role": "assistant", "content": lead},) if lead else ()
        # The first turn's prompt must fit (else the job fails, naming the numbers); a
        # continuation whose transcript filled the context is recorded as truncated.
        overflow = "length" if turn else "raise"
        requests = [ChatRequest(f"{r.request_id}-t{turn}", (*r.messages, *opening), r.seed,
                                prompt_overflow=overflow) for r in active]
        for r, c in zip(active, backend.generate(requests, params), strict=True):
            if turn == 0:
                r.prompt_tokens = c.prompt_tokens
            text = lead + c.text
            r.turns.append(text)
            r.finish_reasons.append(c.finish_reason)
            r.completion_tokens += c.completion_tokens
            # an empty turn ends the rollout: the API refuses an empty assistant message, and
            # asking again for the same history would only repeat it
            # a reasoning model's think block is neither parsed nor sent back
            shown = strip_think(text) if reasoning else text
            if (c.finish_reason == "length" or not shown.strip()
                    or has_complete_output(r.visible(reasoning))):
                r.done = True
            else:
                r.messages = prompts.continue_messages(r.messages, shown)


def meta_schema(meta: Mapping[str, Any]) -> dict[str, pl.DataType]:
    """The dtypes of ``meta``'s columns, copied into every row of a rollout or judge table (a
    null value is a null string)."""
    return {k: pl.Utf8 if v is None else pl.Series([v]).dtype for k, v in meta.items()}


def _frame(rows: list[dict[str, Any]], meta: Mapping[str, Any]) -> pl.DataFrame:
    """Rows as a typed table: ``meta`` columns then :data:`ROW_SCHEMA`, so an empty table, or
    a column null in every row, keeps its dtype."""
    return pl.DataFrame(rows, schema={**meta_schema(meta), **ROW_SCHEMA})


def _rows(rollouts: Sequence[_Rollout], meta: Mapping[str, Any],
          reasoning: bool = False) -> pl.DataFrame:
    rows = []
    for r in rollouts:
        parsed = parse_transcript(r.visible(reasoning), r.finish_reasons[-1] if r.finish_reasons
                                  else "length")
        rows.append({
            **meta,
            "goal_id": r.goal_id, "goal": r.goal, "tier": r.tier, "seed": r.seed,
            "prompt_hash": r.prompt_hash,
            "turns": list(r.turns), "finish_reasons": list(r.finish_reasons),
            "n_turns": len(r.turns),
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
            "transcript": r.transcript,
            "scratchpad": parsed.scratchpad,
            "final_output": parsed.final_output,
            "output_complete": parsed.output_complete,
            "outcome": parsed.outcome,
            "accepted_then_refused": parsed.accepted_then_refused,
        })
    return _frame(rows, meta)


def _open_checkpoint(ckpt: Path, key: str) -> None:
    """Keep the checkpoint folder ``ckpt`` only if its ``key.json`` names ``key``; a folder
    without one, with another key, or with one that cannot be read (truncated, not JSON, wrong
    shape) is emptied (the last with a warning naming the file), so its groups are recomputed.
    Then ``key`` is recorded, atomically."""
    key_file = ckpt / "key.json"
    if ckpt.exists():
        try:
            stored = json.loads(key_file.read_bytes().decode("utf-8"))
            problem = ("" if isinstance(stored, dict) and isinstance(stored.get("key"), str)
                       else 'not an object {"key": "..."}')
        except FileNotFoundError:
            stored, problem = {}, ""
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            stored, problem = {}, f"{type(exc).__name__}: {exc}"
        if problem:
            log.warning("rollout checkpoint key %s is unreadable (%s); discarding the "
                        "checkpoint %s and recomputing its groups", key_file, problem, ckpt)
            shutil.rmtree(ckpt)
        elif stored.get("key") != key:
            log.info("discarding stale rollout checkpoint %s", ckpt)
            shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    write_json_atomic(key_file, {"key": key})


def _read_shard(shard: Path, tier: str, seed: int, goals: pl.DataFrame) -> pl.DataFrame | None:
    """A finished (tier, seed) group's shard, or None when there is none or it cannot be used
    (unreadable Parquet, a column missing, rows of other goals / tier / seed): then it is
    removed with a warning naming it, and the group is recomputed."""
    if not shard.is_file():
        return None
    try:
        frame = read_table(shard)
        missing = sorted(set(ROW_SCHEMA) - set(frame.columns))
        if missing:
            problem = f"column(s) {', '.join(missing)} missing"
        elif (sorted(frame["goal_id"].to_list()) != sorted(int(g) for g in goals["goal_id"])
              or set(frame["tier"].to_list()) != {tier} or set(frame["seed"].to_list()) != {seed}):
            problem = f"its rows are not the goals of tier {tier}, seed {seed}"
        else:
            return frame
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    log.warning("rollout checkpoint shard %s is unusable (%s); recomputing tier %s, seed %d",
                shard, problem, tier, seed)
    shard.unlink(missing_ok=True)
    return None


def run_rollouts(
    backend: GenerationBackend,
    prompts: PromptSet,
    goals: pl.DataFrame,
    *,
    seeds: Sequence[int],
    params: SamplingParams,
    max_turns: int,
    meta: Mapping[str, Any],
    checkpoint_dir: str | Path | None = None,
    checkpoint_key: str = "",
    prefill: str | None = None,
    reasoning: bool = False,
) -> pl.DataFrame:
    """Run every (goal, tier, seed) rollout; return one row each, sorted by those keys.

    ``prefill``: text the first assistant turn starts with (sent as a trailing assistant
    message, which every backend continues); it is part of the recorded turn and transcript.

    ``reasoning``: the model writes ``<think>`` blocks; they stay in ``turns`` and
    ``transcript`` (the record) but are stripped before parsing (outcome, scratchpad, final
    output) and from every assistant turn sent back in a continuation.

    ``meta`` (model, condition, adapter, generation parameters...) is copied into every row.
    With ``checkpoint_dir`` each finished (tier, seed) group is written there and reused by a
    rerun whose ``checkpoint_key`` (a hash of everything that determines the rows) matches.
    """
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None:
        _open_checkpoint(ckpt, checkpoint_key)
    frames = []
    for tier in TIERS:
        for seed in seeds:
            shard = ckpt / f"{tier}-{seed}.parquet" if ckpt else None
            done = _read_shard(shard, tier, int(seed), goals) if shard is not None else None
            if done is not None:
                log.info("resuming: %s/seed %d already done (%s)", tier, seed, shard)
                frames.append(done)
                continue
            group = []
            for goal_id, goal in zip(goals["goal_id"], goals["goal"], strict=True):
                messages = prompts.messages(goal, tier)
                group.append(_Rollout(int(goal_id), goal, tier, int(seed), messages,
                                      prompt_hash(messages)))
            log.info("rollouts: tier=%s seed=%d, %d goals", tier, seed, len(group))
            _run_group(backend, prompts, group, params, max_turns, prefill, reasoning)
            frame = _rows(group, meta, reasoning)
            if shard is not None:
                write_table(frame, shard, {"rule": "rollouts-checkpoint"})
            frames.append(frame)
    # relaxed: a shard written before tables were polars has its all-null columns typed null
    out = pl.concat(frames, how="vertical_relaxed")
    return out.sort(["goal_id", "tier", "seed"], maintain_order=True)


RAW_TIER = "raw"


def run_raw_rollouts(backend: GenerationBackend, goals: pl.DataFrame, *, seeds: Sequence[int],
                     params: SamplingParams, meta: Mapping[str, Any],
                     reasoning: bool = False) -> pl.DataFrame:
    """The raw-AdvBench control (Appendix D.6): the goal as the only user message, no system
    prompt, no tier and no tag protocol, one turn. Compliance cannot be parsed from tags here,
    so ``outcome`` is null; the compliance judge reads ``final_output`` (think blocks stripped
    when ``reasoning``)."""
    rollouts = []
    for seed in seeds:
        for goal_id, goal in zip(goals["goal_id"], goals["goal"], strict=True):
            messages = [{"role": "user", "content": str(goal).strip()}]
            rollouts.append(_Rollout(int(goal_id), goal, RAW_TIER, int(seed), messages,
                                     prompt_hash(messages)))
    requests = [ChatRequest(r.request_id, tuple(r.messages), r.seed) for r in rollouts]
    log.info("raw rollouts: %d goals x %d seeds", len(goals), len(seeds))
    completions = backend.generate(requests, params) if requests else []
    rows = []
    for r, c in zip(rollouts, completions, strict=True):
        rows.append({
            **meta,
            "goal_id": r.goal_id, "goal": r.goal, "tier": r.tier, "seed": r.seed,
            "prompt_hash": r.prompt_hash, "turns": [c.text], "finish_reasons": [c.finish_reason],
            "n_turns": 1, "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens, "transcript": c.text,
            "scratchpad": None, "final_output": strip_think(c.text) if reasoning else c.text,
            "output_complete": c.finish_reason == "stop", "outcome": None,
            "accepted_then_refused": False,
        })
    return _frame(rows, meta).sort(["goal_id", "seed"], maintain_order=True)


def rollout_meta(*, model: str, condition: str, adapter: str | None, backend: str,
                 prompts: PromptSet, params: SamplingParams, max_turns: int,
                 prefill: str | None = None, claim: str | None = None,
                 reasoning: bool = False) -> dict[str, Any]:
    generation = {**params.as_dict(), "max_turns": max_turns, "backend": backend,
                  "prefill": prefill}
    if reasoning:  # recorded only when on, so other models' parameters read as before
        generation["reasoning"] = True
    return {
        "model": model, "condition": condition, "adapter": adapter, "claim": claim,
        "system_prompt_hash": prompts.system_hash,
        "temperature": params.temperature, "top_p": params.top_p,
        "max_new_tokens": params.max_new_tokens, "max_turns": max_turns,
        "backend": backend,
        "generation_params": canonical_json(generation),
    }
