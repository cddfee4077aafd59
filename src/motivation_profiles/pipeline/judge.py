"""Rule entry points of workflow/rules/judge.smk."""

from __future__ import annotations

import logging
from typing import Any

from motivation_profiles.backends.factory import anthropic_client, simulated_judge
from motivation_profiles.pipeline.common import job_provenance, runtime_spec

log = logging.getLogger("motivation_profiles")


# ----------------------------------------------------------------------------- judge, profiles


def _no_ledger():
    """The simulated judge asks no API: an empty request ledger."""
    import polars as pl

    return pl.DataFrame({"output_tokens": []}, schema={"output_tokens": pl.Int64})


def judge(snakemake: Any) -> None:
    """Score every rollout's scratchpad on Directions A and B: a local judge by the
    expectation over its probabilities of the rubric's levels, a hosted one by k samples."""
    from motivation_profiles.backends.anthropic import HostedBackend
    from motivation_profiles.backends.base import SamplingParams
    from motivation_profiles.core.provenance import read_table, write_table
    from motivation_profiles.judge.scoring import (
        Rubric,
        agreement_summary,
        judge_rollouts,
        judge_rollouts_expected,
    )

    p = snakemake.params
    spec = p.judge
    rubric = Rubric.load(snakemake.input.rubric)
    rollouts_df = read_table(snakemake.input.table)
    params = SamplingParams(temperature=spec["temperature"], top_p=spec["top_p"],
                            max_new_tokens=spec["max_tokens"])
    subject = getattr(p, "subject", None)
    if subject is not None:  # a simulated model: its planted judge answers sampled text
        backend = simulated_judge(snakemake.input.policy)
        ledger_of = _no_ledger
        meta = {"judge_backend": "simulated", "judge_model": backend.name,
                "rubric": rubric.name, "rubric_sha256": rubric.sha256,
                "samples": spec["samples"], "judge_scoring": "sampled"}
    else:
        meta = {"judge_backend": spec["backend"], "judge_model": spec["model"],
                "rubric": rubric.name, "rubric_sha256": rubric.sha256,
                "samples": spec["samples"],
                "judge_scoring": "expected" if spec["backend"] == "local" else "sampled"}
        if spec["backend"] == "local":
            from motivation_profiles.backends.factory import local_backend

            backend = local_backend(runtime_spec(snakemake, spec["model"], p.model),
                                    snakemake.input.model)
            table = judge_rollouts_expected(rollouts_df, backend, rubric, meta=meta)
            log.info("judge (expected scores): %d rollouts, statuses %s", len(table),
                     dict(table["status"].value_counts(sort=True).iter_rows()))
            for d in ("a", "b"):
                log.info("direction %s: mean score %s, mean probability mass on the levels %s",
                         d.upper(), table[f"{d}_score"].mean(), table[f"{d}_mass"].mean())
            write_table(table, snakemake.output[0],
                        job_provenance(snakemake, params=dict(p.items())))
            return
        client = anthropic_client(p.hosted)
        backend = HostedBackend(client, spec["model"])
        ledger_of = client.ledger_frame
    table = judge_rollouts(rollouts_df, backend, rubric, samples=spec["samples"], params=params,
                           prefill=spec["prefill"], meta=meta)
    ledger = ledger_of()
    log.info("judge: %d rollouts, statuses %s; %d requests not cached (%d output tokens)",
             len(table), dict(table["status"].value_counts(sort=True).iter_rows()), len(ledger),
             int(ledger["output_tokens"].sum()) if len(ledger) else 0)
    for d in ("a", "b"):
        log.info("agreement, direction %s: %s", d.upper(),
                 agreement_summary(table[f"{d}_votes"].to_list()))
    write_table(table, snakemake.output[0], job_provenance(snakemake, params=dict(p.items())))
