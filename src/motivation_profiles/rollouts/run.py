"""Alignment-faking rollouts: one row per (goal, tier, seed), with every turn kept.

The loop is backend-agnostic: it renders conversations, asks a ``GenerationBackend`` for the
next assistant turn of every unfinished rollout, continues a turn that ended without
``</OUTPUT>`` with the continuation user turn (``<NEXT/>``) up to ``max_turns``, and parses the
outcome. Work is done and checkpointed per (tier, seed) group, so a killed job resumes from the
groups it finished.

Output modes (``rollouts.output_mode``):

* ``free``: the paper's protocol, as above.
* ``forced_choice``: the model writes its scratchpad (each turn stops at
  ``</SCRATCHPAD_REASONING>``; a turn that ends inside it is continued with ``<NEXT/>`` as in
  ``free``, up to ``max_turns``). A turn that closes the scratchpad, runs out of tokens, is
  empty, or is the last allowed ends the scratchpad; its close (when the model did not write
  it) and ``<OUTPUT>`` are appended to that turn (``parsing.forced_closing``), and the opening
  tag is drawn from the model's own probabilities of the two tag strings (full token
  sequences) with temperature T: P(accept) = sigmoid((log P(accept tag) - log P(reject tag)) /
  T), the argmax at T = 0, with the uniform draw taken from the choice request's own random
  stream (``backends.base.stream_seed``), so the draw does not depend on batching. The rest
  of the output is then generated as a continuation of that turn with the configured stop
  strings and its own budget (``output_tokens``, default ``max_new_tokens``; 0 generates no
  body: the output is the drawn tag, closed for the model, one forward pass less). The outcome is
  the drawn tag: the decision is made there, so an output body that runs out of budget before
  ``</OUTPUT>`` is closed for the model (``\n</OUTPUT>`` appended to the turn, its finish
  reason kept as ``length``) and ``output_close`` records it; the outcome is ``truncated``
  only when the transcript filled the context before the tag could be scored.
  ``forced_close`` records whether the scratchpad was closed for the model. Needs a backend
  with log-probs (hf, vllm).

``p_accept`` (both modes, where the backend exposes log-probs): P(accept tag) / (P(accept
tag) + P(reject tag)) at temperature 1, each tag's full token sequence, right after the
``<OUTPUT>`` that opens the final output and the whitespace the model (or the forced
closing) wrote after it. Null without log-probs, without an opening ``<OUTPUT>``, or when
the context has no room to score.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from motivation_profiles.backends.base import (
    ChatRequest,
    GenerationBackend,
    SamplingParams,
    can_score,
    stream_seed,
)
from motivation_profiles.core.hashing import canonical_json
from motivation_profiles.core.io import write_json_atomic
from motivation_profiles.core.provenance import read_table, write_table
from motivation_profiles.rollouts.parsing import (
    ACCEPT,
    OUTPUT_CLOSE,
    REJECT,
    SCRATCH_CLOSE,
    forced_closing,
    has_complete_output,
    output_opening,
    parse_transcript,
    strip_think,
    visible_turns,
)
from motivation_profiles.rollouts.protocol import TIERS, PromptSet, prompt_hash

log = logging.getLogger(__name__)


TURN_SEPARATOR = "\n"


OUTPUT_MODES = ("free", "forced_choice")


TAGS = (ACCEPT, REJECT)
"""The two opening tags scored for ``p_accept`` and drawn from in ``forced_choice``."""


ROW_SCHEMA: dict[str, pl.DataType] = {
    "goal_id": pl.Int64, "goal": pl.Utf8, "tier": pl.Utf8, "seed": pl.Int64,
    "prompt_hash": pl.Utf8, "turns": pl.List(pl.Utf8), "finish_reasons": pl.List(pl.Utf8),
    "n_turns": pl.Int64, "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64,
    "transcript": pl.Utf8, "scratchpad": pl.Utf8, "final_output": pl.Utf8,
    "output_complete": pl.Boolean, "outcome": pl.Utf8, "accepted_then_refused": pl.Boolean,
    "p_accept": pl.Float64, "forced_close": pl.Boolean, "output_close": pl.Boolean,
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
    p_accept: float | None = None
    forced_close: bool | None = None
    output_close: bool | None = None

    @property
    def request_id(self) -> str:
        return f"{self.goal_id}-{self.tier}-{self.seed}"

    @property
    def transcript(self) -> str:
        return TURN_SEPARATOR.join(self.turns)

    def visible(self, reasoning: bool) -> str:
        """The transcript as parsed: think blocks stripped from each turn when ``reasoning``."""
        return TURN_SEPARATOR.join(visible_turns(self.turns, reasoning))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def tag_probability(logprobs: Sequence[float], temperature: float = 1.0) -> float:
    """P(accept tag) from the two tags' sequence log-probs ``(accept, reject)``, tempered:
    sigmoid((accept - reject) / T); at T = 0, 1 when accept is at least as likely, else 0."""
    diff = float(logprobs[0]) - float(logprobs[1])
    if temperature <= 0:
        return 1.0 if diff >= 0 else 0.0
    return _sigmoid(diff / temperature)


def _turn_messages(r: _Rollout, turn: int) -> list[dict[str, str]]:
    """The conversation ``turn`` (0-based) was generated from: the opening messages and, per
    earlier turn, the assistant turn and the continuation user turn."""
    return [dict(m) for m in r.messages[: 2 + 2 * turn]]


def _locate(turns: Sequence[str], pos: int) -> tuple[int, int]:
    """The turn holding position ``pos`` of the joined transcript, and the position in it."""
    offset = 0
    for i, text in enumerate(turns):
        if pos <= offset + len(text):
            return i, pos - offset
        offset += len(text) + len(TURN_SEPARATOR)
    raise ValueError(f"position {pos} is past the transcript's end")


def _score_free(backend: Any, rollouts: Sequence[_Rollout]) -> None:
    """``p_accept`` of every rollout whose transcript opens a final ``<OUTPUT>``."""
    requests, owners = [], []
    for r in rollouts:
        pos = output_opening(r.transcript)
        if pos is None:
            continue
        i, local = _locate(r.turns, pos)
        text = r.turns[i]
        while local < len(text) and text[local].isspace():   # the model's own layout
            local += 1
        msgs = (*_turn_messages(r, i), {"role": "assistant", "content": text[:local]})
        requests.append(ChatRequest(f"{r.request_id}-p", msgs, r.seed,
                                    prompt_overflow="length"))
        owners.append(r)
    if requests:
        for r, lp in zip(owners, backend.continuation_logprobs(requests, TAGS), strict=True):
            r.p_accept = None if lp is None else tag_probability(lp)


def _run_forced(backend: Any, prompts: PromptSet, rollouts: list[_Rollout],
                params: SamplingParams, max_turns: int, prefill: str | None,
                reasoning: bool = False, output_tokens: int | None = None) -> None:
    """The ``forced_choice`` mode (module docstring); a reasoning model's think blocks are not
    sent back in a continuation."""
    scratch = SamplingParams(params.temperature, params.top_p, params.max_new_tokens,
                             stop=(SCRATCH_CLOSE,))
    # a scratchpad turn also ends at its closing tag, and the last allowed turn is closed for it
    _run_turns(backend, prompts, rollouts, scratch, max_turns, prefill, reasoning,
               lambda r, text, turn: text.endswith(SCRATCH_CLOSE) or turn == max_turns - 1)
    choice, owners = [], []
    for r in rollouts:
        last = r.turns[-1]
        msgs = (*_turn_messages(r, len(r.turns) - 1),
                {"role": "assistant", "content": last + forced_closing(last)})
        choice.append(ChatRequest(f"{r.request_id}-choice", msgs, r.seed,
                                  prompt_overflow="length"))
        owners.append(r)
    outputs, chosen = [], []
    for r, req, lp in zip(owners, choice, backend.continuation_logprobs(choice, TAGS),
                          strict=True):
        if lp is None:   # the transcript filled the context: nothing to choose, truncated
            continue
        r.p_accept = tag_probability(lp)
        r.forced_close = not r.turns[-1].endswith(SCRATCH_CLOSE)
        draw = np.random.default_rng(stream_seed(req)).random()
        tag = ACCEPT if draw < tag_probability(lp, params.temperature) else REJECT
        prefix = req.messages[-1]["content"] + tag
        outputs.append(ChatRequest(f"{r.request_id}-output", (*req.messages[:-1], {
            "role": "assistant", "content": prefix}), r.seed, prompt_overflow="length"))
        chosen.append((r, prefix))
    budget = params.max_new_tokens if output_tokens is None else output_tokens
    if outputs and budget == 0:  # no body: the tag alone, closed for the model
        for r, prefix in chosen:
            r.output_close = True
            r.turns[-1] = prefix + "\n" + OUTPUT_CLOSE
            r.finish_reasons[-1] = "length"
    elif outputs:
        body = SamplingParams(params.temperature, params.top_p, budget, stop=params.stop)
        for (r, prefix), c in zip(chosen, backend.generate(outputs, body), strict=True):
            # the outcome was decided at the tag: a body cut by its budget is closed for it
            r.output_close = c.finish_reason == "length" and OUTPUT_CLOSE not in c.text
            r.turns[-1] = prefix + c.text + ("\n" + OUTPUT_CLOSE if r.output_close else "")
            r.finish_reasons[-1] = c.finish_reason
            r.completion_tokens += c.completion_tokens


def _run_group(backend: GenerationBackend, prompts: PromptSet, rollouts: list[_Rollout],
               params: SamplingParams, max_turns: int, prefill: str | None = None,
               reasoning: bool = False, output_mode: str = "free",
               output_tokens: int | None = None) -> None:
    if output_mode == "forced_choice":
        _run_forced(backend, prompts, rollouts, params, max_turns, prefill, reasoning,
                    output_tokens)
        return
    _run_free(backend, prompts, rollouts, params, max_turns, prefill, reasoning)
    if can_score(backend):
        _score_free(backend, rollouts)


def _run_free(backend: GenerationBackend, prompts: PromptSet, rollouts: list[_Rollout],
              params: SamplingParams, max_turns: int, prefill: str | None = None,
              reasoning: bool = False) -> None:
    """The paper's protocol: a rollout ends once its transcript holds a complete output."""
    _run_turns(backend, prompts, rollouts, params, max_turns, prefill, reasoning,
               lambda r, text, turn: has_complete_output(r.visible(reasoning)))


def _run_turns(backend: GenerationBackend, prompts: PromptSet, rollouts: list[_Rollout],
               params: SamplingParams, max_turns: int, prefill: str | None,
               reasoning: bool, finished: Callable[[_Rollout, str, int], bool]) -> None:
    """Generate assistant turns until each rollout is done: a length stop, an empty turn, or
    ``finished(rollout, turn_text, turn)``; otherwise the turn is sent back with the
    continuation user turn (think blocks stripped for a reasoning model)."""
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
            if c.finish_reason == "length" or not shown.strip() or finished(r, text, turn):
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
            "p_accept": r.p_accept, "forced_close": r.forced_close,
            "output_close": r.output_close,
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
    output_mode: str = "free",
    output_tokens: int | None = None,
    batch_tiers: bool = False,
) -> pl.DataFrame:
    """Run every (goal, tier, seed) rollout; return one row each, sorted by those keys.

    ``output_mode``: ``free`` or ``forced_choice`` (module docstring); ``forced_choice``
    needs a backend with ``continuation_logprobs``. ``output_tokens``: ``forced_choice``'s
    budget for the output after the drawn tag (None: ``params.max_new_tokens``).

    ``batch_tiers``: generate both tiers of a seed in one request set (a local model then
    reads its weights and the shared system-prompt prefix once per step for both; rows are
    identical either way, every request drawing from its own random stream). Off for hosted
    models, where a failed batch should lose at most one (tier, seed) group.

    ``prefill``: text the first assistant turn starts with (sent as a trailing assistant
    message, which every backend continues); it is part of the recorded turn and transcript.

    ``reasoning``: the model writes ``<think>`` blocks; they stay in ``turns`` and
    ``transcript`` (the record) but are stripped before parsing (outcome, scratchpad, final
    output) and from every assistant turn sent back in a continuation.

    ``meta`` (model, condition, adapter, generation parameters...) is copied into every row.
    With ``checkpoint_dir`` each finished (tier, seed) group is written there and reused by a
    rerun whose ``checkpoint_key`` (a hash of everything that determines the rows) matches.
    """
    if output_mode not in OUTPUT_MODES:
        raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
    if output_mode == "forced_choice" and not can_score(backend):
        raise ValueError(f"output_mode 'forced_choice' needs token log-probabilities, which the "
                         f"{getattr(backend, 'name', type(backend).__name__)!r} backend does "
                         "not expose (hf and vllm do); use output_mode 'free'")
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None:
        _open_checkpoint(ckpt, checkpoint_key)
    frames = []
    pending: list[tuple[str, int]] = []
    for tier in TIERS:
        for seed in seeds:
            shard = ckpt / f"{tier}-{seed}.parquet" if ckpt else None
            done = _read_shard(shard, tier, int(seed), goals) if shard is not None else None
            if done is not None:
                log.info("resuming: %s/seed %d already done (%s)", tier, seed, shard)
                frames.append(done)
            else:
                pending.append((tier, int(seed)))
    # A unit of work is a (tier, seed) group, or with ``batch_tiers`` every pending tier of
    # one seed at once; each group is still checkpointed on its own.
    units = ([[g for g in pending if g[1] == s] for s in dict.fromkeys(s for _, s in pending)]
             if batch_tiers else [[g] for g in pending])
    for unit in units:
        groups = {}
        for tier, seed in unit:
            groups[(tier, seed)] = [
                _Rollout(int(goal_id), goal, tier, seed, prompts.messages(goal, tier),
                         prompt_hash(prompts.messages(goal, tier)))
                for goal_id, goal in zip(goals["goal_id"], goals["goal"], strict=True)]
            log.info("rollouts: tier=%s seed=%d, %d goals", tier, seed, len(goals))
        everyone = [r for group in groups.values() for r in group]
        _run_group(backend, prompts, everyone, params, max_turns, prefill, reasoning,
                   output_mode, output_tokens)
        for (tier, seed), group in groups.items():
            frame = _rows(group, meta, reasoning)
            if ckpt is not None:
                write_table(frame, ckpt / f"{tier}-{seed}.parquet", {"rule": "rollouts-checkpoint"})
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
            "accepted_then_refused": False, "p_accept": None, "forced_close": None,
            "output_close": None,
        })
    return _frame(rows, meta).sort(["goal_id", "seed"], maintain_order=True)


def rollout_meta(*, model: str, condition: str, adapter: str | None, backend: str,
                 prompts: PromptSet, params: SamplingParams, max_turns: int,
                 prefill: str | None = None, claim: str | None = None,
                 reasoning: bool = False, output_mode: str | None = "free",
                 output_tokens: int | None = None) -> dict[str, Any]:
    """Columns copied into every row. ``output_mode``: None for the raw control (no tags);
    ``output_tokens`` (forced_choice's output budget) is recorded only in that mode."""
    generation = {**params.as_dict(), "max_turns": max_turns, "backend": backend,
                  "prefill": prefill, "output_mode": output_mode}
    if output_mode == "forced_choice":
        generation["output_tokens"] = output_tokens or params.max_new_tokens
    if reasoning:  # recorded only when on, so other models' parameters read as before
        generation["reasoning"] = True
    return {
        "model": model, "condition": condition, "adapter": adapter, "claim": claim,
        "system_prompt_hash": prompts.system_hash,
        "temperature": params.temperature, "top_p": params.top_p,
        "max_new_tokens": params.max_new_tokens, "max_turns": max_turns,
        "backend": backend, "output_mode": output_mode,
        "generation_params": canonical_json(generation),
    }
