"""Rule entry points of workflow/rules/rollouts.smk."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from motivation_profiles.backends.factory import anthropic_client, local_backend
from motivation_profiles.pipeline.common import job_provenance, runtime_spec

log = logging.getLogger("motivation_profiles")


def rollouts(snakemake: Any) -> None:
    from motivation_profiles.backends.base import SamplingParams
    from motivation_profiles.core.hashing import canonical_json, config_hash
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.rollouts.protocol import PromptSet
    from motivation_profiles.rollouts.run import rollout_meta, run_raw_rollouts, run_rollouts
    from motivation_profiles.rollouts.system_prompt import stand_in_note

    p = snakemake.params
    spec, gen, cond = p.model, p.generation, p.condition
    note = stand_in_note(dict(p.prompts))
    if note:
        log.warning("%s", note)
    log.info("adapter: %s", cond["adapter"] or "none (the bare instruct model)")
    steer = cond.get("steering")
    prompts = PromptSet.from_config(p.prompts, rename=cond["rename"],
                                    system_suffix=cond["claim"] or "")
    adapter = snakemake.input.get("adapter")
    if spec["backend"] == "simulated":  # a virtual SDF branch: the adapter is its name
        adapter = cond["adapter"]
    seeds = spec.get("seeds") or gen["seeds"]  # a simulated model may set its own seeds
    raw = bool(steer and steer["raw"])
    params = SamplingParams(temperature=gen["temperature"], top_p=gen["top_p"],
                            max_new_tokens=cond["raw_max_new_tokens"] if raw
                            else gen["max_new_tokens"], stop=() if raw else tuple(gen["stop"]))
    goals_df = read_table(snakemake.input.goals)
    reasoning = bool(spec.get("reasoning", False))  # strip <think> blocks (rollouts.parsing)
    # A simulated model writes its whole transcript in one turn from its planted policy, so it
    # runs the free protocol; its p_accept is the policy's accept probability (its log-probs).
    output_mode = "free" if spec["backend"] == "simulated" else gen["output_mode"]
    steering, layers = None, None
    if steer and steer["vector"] is not None:
        from motivation_profiles.steering.apply import load_steering, read_selected_layers

        layers = read_selected_layers(snakemake.input.layers)
        steering = load_steering(snakemake.input.vector, layers, steer["multiplier"])
        log.info("steering: %s x %+g at layers %s", steer["vector"], steer["multiplier"],
                 layers)
    if spec["backend"] == "anthropic":
        from motivation_profiles.backends.anthropic import HostedBackend

        backend = HostedBackend(anthropic_client(p.hosted), spec["model_id"])
    else:
        backend = local_backend(runtime_spec(snakemake, snakemake.wildcards.model, spec),
                                snakemake.input.model, adapter=adapter, steering=steering)
    meta = rollout_meta(model=snakemake.wildcards.model, condition=snakemake.wildcards.condition,
                        adapter=cond["adapter"], backend=backend.name, prompts=prompts,
                        params=params, max_turns=1 if raw else gen["max_turns"],
                        prefill=None if raw else gen["prefill"], claim=cond["claim"],
                        reasoning=reasoning, output_mode=None if raw else output_mode,
                        output_tokens=gen.get("output_tokens"))
    meta.update(steering_vector=steer["vector"] if steer else None,
                steering_multiplier=float(steer["multiplier"]) if steer else 0.0,
                steering_layers=",".join(map(str, layers)) if layers else None)
    out = Path(snakemake.output[0])
    if raw:
        df = run_raw_rollouts(backend, goals_df, seeds=cond.get("raw_seeds") or seeds,
                              params=params, meta=meta, reasoning=reasoning)
        log.info("raw rollouts: %d, finish %s", len(df),
                 dict(df["finish_reasons"].list.last().value_counts(sort=True).iter_rows()))
        write_table(df, out, job_provenance(snakemake, params=dict(p.items())))
        return
    key = config_hash({"params": canonical_json(dict(p.items())),
                       "inputs": job_provenance(snakemake)["inputs"]})
    df = run_rollouts(backend, prompts, goals_df, seeds=seeds, params=params,
                      max_turns=gen["max_turns"], meta=meta, prefill=gen["prefill"],
                      reasoning=reasoning, output_mode=output_mode,
                      output_tokens=gen.get("output_tokens"),
                      batch_tiers=spec["backend"] in ("hf", "vllm"),
                      # a simulated model needs no resume points (thousands of rollouts/s)
                      checkpoint_dir=None if spec["backend"] == "simulated"
                      else out.parent / f".{out.stem}.partial", checkpoint_key=key)
    counts = df.group_by("tier", "outcome").len().sort(["tier", "len"], descending=[False, True],
                                                       maintain_order=True)
    log.info("outcomes: %s", {(t, o): n for t, o, n in counts.iter_rows()})
    write_table(df, out, job_provenance(snakemake, params=dict(p.items())))
    shutil.rmtree(out.parent / f".{out.stem}.partial", ignore_errors=True)


def system_prompt(snakemake: Any) -> None:
    from motivation_profiles.rollouts.system_prompt import fetch_system_prompt

    src = snakemake.params.source
    fetch_system_prompt(src["url"], snakemake.output[0], sha256=src["sha256"])
    log.info("system prompt %s verified (sha256 %s)", src["url"], src["sha256"])
