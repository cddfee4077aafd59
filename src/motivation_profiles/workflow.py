"""Entry points called by workflow_scripts/*.py with Snakemake's ``snakemake`` object.

Each function reads paths and params from the job, calls the package, and writes outputs with
provenance metadata. Logging (and tqdm progress bars) go to the rule's ``log:`` file.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger("motivation_profiles")


def run(snakemake: Any, step: Callable[[Any], None]) -> None:
    """Run ``step(snakemake)`` with logging and stderr sent to the job's log file."""
    log_path = Path(snakemake.log[0]) if len(snakemake.log) else None
    stream = open(log_path, "a") if log_path else sys.stderr  # noqa: SIM115
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stderr(stream):
            log.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards))
            step(snakemake)
            log.info("rule %s done in %.1f s", snakemake.rule, time.perf_counter() - t0)
    except BaseException:
        log.exception("rule %s failed", snakemake.rule)
        raise
    finally:
        root.removeHandler(handler)
        if stream is not sys.stderr:
            stream.close()


def _provenance(snakemake: Any, inputs: list[str] | None = None,
                params: dict[str, Any] | None = None) -> dict[str, Any]:
    from .provenance import provenance_record

    return provenance_record(
        rule=snakemake.rule, config=snakemake.config,
        inputs=inputs if inputs is not None else list(snakemake.input), params=params,
    )


# ----------------------------------------------------------------------------- rules


def prepare_model(snakemake: Any) -> None:
    from .models import prepare_model as prepare

    prepare(snakemake.wildcards.model, snakemake.params.spec, snakemake.output[0])


def advbench(snakemake: Any) -> None:
    from .data import download

    download(snakemake.params.url, snakemake.output[0], sha256=snakemake.params.sha256)


def goals(snakemake: Any) -> None:
    from .data import load_goals
    from .provenance import write_table

    p = snakemake.params
    if p.sha256 is None:
        log.warning("goals.sha256 is null: the goal file is NOT verified against a checksum")
    df = load_goals(snakemake.input.goals, sha256=p.sha256, n=p.n, seed=p.seed)
    log.info("kept %d goals (n=%s, seed=%d)", len(df), p.n, p.seed)
    write_table(df, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def rollouts(snakemake: Any) -> None:
    from .config import canonical_json, config_hash
    from .data import PromptSet
    from .evaluation.rollouts import rollout_meta, run_rollouts
    from .generation import HFBackend, SamplingParams
    from .provenance import read_table, write_table

    p = snakemake.params
    spec, gen = p.model, p.generation
    prompts = PromptSet.from_config(p.prompts)
    params = SamplingParams(temperature=gen["temperature"], top_p=gen["top_p"],
                            max_new_tokens=gen["max_new_tokens"], stop=tuple(gen["stop"]))
    goals_df = read_table(snakemake.input.goals)
    backend = HFBackend.from_pretrained(
        snakemake.input.model, dtype=spec["dtype"], device=spec["device"],
        batch_size=spec["batch_size"], max_model_len=spec["max_model_len"],
    )
    meta = rollout_meta(model=snakemake.wildcards.model, condition=snakemake.wildcards.condition,
                        adapter=None, backend=backend.name, prompts=prompts, params=params,
                        max_turns=gen["max_turns"])
    out = Path(snakemake.output[0])
    key = config_hash({"params": canonical_json(dict(p.items())),
                       "inputs": _provenance(snakemake)["inputs"]})
    df = run_rollouts(backend, prompts, goals_df, seeds=gen["seeds"], params=params,
                      max_turns=gen["max_turns"], meta=meta,
                      checkpoint_dir=out.parent / f".{out.stem}.partial", checkpoint_key=key)
    log.info("outcomes: %s", df.groupby("tier")["outcome"].value_counts().to_dict())
    write_table(df, out, _provenance(snakemake, params=dict(p.items())))
    shutil.rmtree(out.parent / f".{out.stem}.partial", ignore_errors=True)


def metrics(snakemake: Any) -> None:
    from .evaluation.metrics import condition_metrics
    from .provenance import read_table, write_table

    p = snakemake.params
    df = pd.concat([read_table(f) for f in snakemake.input.tables], ignore_index=True)
    table = condition_metrics(df, n_boot=p.bootstrap_samples, level=p.ci_level, seed=p.seed)
    log.info("\n%s", table.to_string())
    write_table(table, snakemake.output[0], _provenance(snakemake, params=dict(p.items())))


def figure_baseline(snakemake: Any) -> None:
    from .figures import baseline_compliance
    from .provenance import read_table

    df = pd.concat([read_table(f) for f in snakemake.input.tables], ignore_index=True)
    baseline_compliance(df, snakemake.params.display_names, list(snakemake.output),
                        dpi=snakemake.params.dpi)
