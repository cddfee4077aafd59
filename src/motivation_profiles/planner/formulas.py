"""Every cost formula of the planner, in one place. Each is a pure function of numbers taken
from the config (and the ``planner`` assumptions); ``tests/planner/test_formulas.py`` checks
each one by hand.

Notation: ``R`` rollouts of one job = goals x 2 tiers x seeds; ``T`` expected assistant turns
per rollout (``planner.rollout_turns``, at most ``rollouts.max_turns``); ``f`` expected share
of a turn's ``max_new_tokens`` that is generated (``planner.turn_fill``: 1.0 = every turn ends
at its cap, which is the upper bound and what a small model does); ``P`` prompt tokens of a
rollout's first turn (system prompt + claim + user turn, characters / ``chars_per_token``).

=========================  ===================================================================
quantity                   formula
=========================  ===================================================================
generated, AF rollouts     R * T * f * max_new_tokens            (:func:`rollout_generated`);
                           rollouts.output_mode forced_choice adds R * f * output_tokens:
                           the output generated after the drawn tag (:func:`forced_output`;
                           output_tokens defaults to max_new_tokens)
prefill, AF rollouts       R * (T * P + g * T * (T - 1) / 2),  g = f * max_new_tokens: turn t
                           re-reads the prompt and the t earlier turns (:func:`rollout_prefill`)
judge requests             R * s * k   (s: share with a scratchpad, k: judge.samples)
judge output               requests * judge_fill * judge.max_tokens
judge input                requests * (rubric + scratchpad), scratchpad = T * g tokens
document requests          1 + types + types * ideas * docs (* 2 with revision) per universe
LoRA training tokens       token budget (or the generated corpus) * epochs
GPU-hours                  gpus * (generated / gen_tok_s + prefill / prefill_tok_s
                           + trained / train_tok_s) / 3600, where each rate is per job:
                           rate_per_gpu_per_billion * max(gpus, 1) / params_b (a bigger model
                           is proportionally slower, more GPUs proportionally faster)
API dollars                (input * price_in + output * price_out) / 1e6, times the Batches
                           factor (0.5) when a job sends >= hosted.batch_threshold requests;
                           requests already in the response cache cost nothing
checkpoint disk            params_b * 1e9 * bytes per parameter (dtype)
LoRA adapter disk          rank * 21.5 * d * L * 4 bytes (q,k,v,o: 2d each; gate, up, down:
                           d + 3.5d each), with L = 80 * (params_b / 70)^(1/3) layers and
                           d = sqrt(params_b * 1e9 / (12.75 * L)) (a Llama-shaped model)
activation cache disk      rows * L * d * 2 poolings * 4 bytes (float32), rows = 2 per pair
=========================  ===================================================================
"""

from __future__ import annotations

import math

ADVBENCH_GOALS = 520
"""Rows of AdvBench's harmful_behaviors.csv (used when goals.n is null and the file is not
on this machine yet)."""

TIERS = 2


def rollouts_per_job(n_goals: int, n_seeds: int) -> int:
    """R: one rollout per (goal, tier, seed)."""
    return n_goals * TIERS * n_seeds


def expected_turns(turns: float, max_turns: int) -> float:
    """T, capped to [1, max_turns]."""
    return min(max(turns, 1.0), float(max_turns))


def rollout_generated(r: int, turns: float, fill: float, max_new_tokens: int) -> float:
    """Generated tokens of a rollout job: R * T * f * max_new_tokens."""
    return r * turns * fill * max_new_tokens


def forced_output(r: int, fill: float, output_tokens: int) -> float:
    """forced_choice: the output a rollout generates after its drawn tag, R * f * output_tokens
    (one more generation of at most ``rollouts.output_tokens``)."""
    return r * fill * output_tokens


def rollout_prefill(r: int, turns: float, prompt_tokens: float, fill: float,
                    max_new_tokens: int) -> float:
    """Prompt tokens read by a rollout job: each turn t (0-based) reads the prompt and the t
    earlier turns, so R * (T * P + g * T * (T - 1) / 2) with g = f * max_new_tokens."""
    g = fill * max_new_tokens
    return r * (turns * prompt_tokens + g * turns * (turns - 1) / 2)


def judge_requests(r: int, scratchpad_share: float, samples: int) -> float:
    """One request per judged scratchpad and sample."""
    return r * scratchpad_share * samples


def capped_output(requests: float, fill: float, max_tokens: int) -> float:
    """Output tokens of ``requests`` calls, each using ``fill`` of its ``max_tokens`` cap."""
    return requests * fill * max_tokens


def document_requests(n_types: int, ideas_per_type: int, docs_per_idea: int,
                      revise: bool) -> dict[str, int]:
    """Requests of one universe's document pipeline, per stage (one round per list)."""
    docs = n_types * ideas_per_type * docs_per_idea
    return {"types": 1, "ideas": n_types, "document": docs, "revision": docs if revise else 0}


def training_tokens(budget: float, epochs: float) -> float:
    return budget * epochs


def job_rate(per_gpu_per_billion: float, gpus: int, params_b: float) -> float:
    """Tokens per second of one job: the per-GPU rate of a 1B-parameter model, times the
    job's GPUs (at least 1: a CPU job runs on one device), divided by the model's size."""
    return per_gpu_per_billion * max(gpus, 1) / max(params_b, 1e-3)


def hours(tokens: float, rate: float) -> float:
    return tokens / rate / 3600.0 if tokens else 0.0


def gpu_hours(job_hours: float, gpus: int) -> float:
    return job_hours * gpus


def api_usd(input_tokens: float, output_tokens: float, price_in: float, price_out: float,
            batched: bool, batch_factor: float = 0.5) -> float:
    """US dollars for the tokens, prices per million; Batches cost ``batch_factor`` of it."""
    usd = (input_tokens * price_in + output_tokens * price_out) / 1e6
    return usd * batch_factor if batched else usd


def uses_batches(uncached_requests: float, batch_threshold: int) -> bool:
    """hosted.py: fewer than batch_threshold uncached requests go to the Messages API."""
    return uncached_requests >= batch_threshold


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def checkpoint_bytes(params_b: float, dtype: str) -> float:
    return params_b * 1e9 * DTYPE_BYTES[dtype]


def model_shape(params_b: float) -> tuple[int, int]:
    """(layers L, hidden size d) of a Llama-shaped model of ``params_b`` billion parameters:
    L = 80 (params_b / 70)^(1/3), d = sqrt(params_b 1e9 / (12.75 L)) (70B -> 80, ~8.3k)."""
    layers = max(1, round(80 * (params_b / 70) ** (1 / 3)))
    return layers, max(1, round(math.sqrt(params_b * 1e9 / (12.75 * layers))))


def lora_adapter_bytes(params_b: float, rank: int) -> float:
    """An all-linear LoRA adapter in float32: rank * 21.5 d per layer."""
    layers, d = model_shape(params_b)
    return rank * 21.5 * d * layers * 4


def activation_cache_bytes(rows: int, params_b: float) -> float:
    """Pooled activations: every row, every layer, two poolings, float32."""
    layers, d = model_shape(params_b)
    return rows * layers * d * 2 * 4


def text_bytes(tokens: float, chars_per_token: float, copies: float = 3.0) -> float:
    """Text written for ``tokens`` generated tokens: the rollout table keeps each turn, the
    transcript and the scratchpad / output (about 3 copies, before compression)."""
    return tokens * chars_per_token * copies
