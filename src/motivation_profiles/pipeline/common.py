"""What every rule entry point shares: running it with logging, its provenance record, and
reading a list of tables.

``workflow/scripts/run.py`` calls ``run(snakemake, entry_point(rule))``. Entry points (one
module per rules file in this package) read paths and params from the job, call the package,
and write outputs with provenance metadata. Logging (and tqdm progress bars) go to the rule's
``log:`` file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

log = logging.getLogger("motivation_profiles")


def run(snakemake: Any, step: Callable[[Any], None], *, preloaded: bool = False) -> None:
    """Run ``step(snakemake)`` with logging and stderr sent to the job's log file.

    Torch and its BLAS get the job's own cores (Snakemake's ``threads``, 1 unless a rule asks
    for more; an ``OMP_NUM_THREADS`` already set wins): by default each would start one thread
    per core of the machine, and two jobs on two cores then fight over them (measured on the
    demo: a rollouts job at 35 % of a core beside another). ``preloaded``: the job runs in a
    warm-start child, whose model libraries the server imported (said in the log)."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(getattr(snakemake, "threads", None) or 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    if "torch" in sys.modules:  # imported before the job (a warm-start child): set it directly
        sys.modules["torch"].set_num_threads(int(threads))
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
            log.info("rule %s done in %.1f s; model libraries loaded: %s%s", snakemake.rule,
                     time.perf_counter() - t0, ", ".join(model_libraries_loaded()) or "none",
                     " (preloaded: warm start)" if preloaded else "")
    except BaseException:
        log.exception("rule %s failed", snakemake.rule)
        raise
    finally:
        root.removeHandler(handler)
        if stream is not sys.stderr:
            stream.close()


# Libraries that only model jobs may load; table and figure jobs that load them pay seconds of
# imports each (tests/workflow/test_e2e.py reads this line from their logs).
MODEL_LIBRARIES = ("torch", "transformers", "peft", "vllm")


def model_libraries_loaded() -> list[str]:
    """The model libraries imported in this process so far."""
    return [m for m in MODEL_LIBRARIES if m in sys.modules]


# A local model's settings that change how fast a job runs, not what it computes: read from
# the job's config (runtime_spec), not passed as rule parameters, so turning them on or off
# reruns nothing.
RUNTIME_ONLY = ("kv_reuse_gib", "prefix_cache")


def runtime_spec(snakemake: Any, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (model ``name``'s rule parameters) with its :data:`RUNTIME_ONLY` settings from
    the job's config added."""
    model = (snakemake.config.get("models") or {}).get(name) or {}
    return {**spec, **{k: model[k] for k in RUNTIME_ONLY if k in model}}


def job_provenance(snakemake: Any, inputs: list[str] | None = None,
                params: dict[str, Any] | None = None) -> dict[str, Any]:
    from motivation_profiles.core.provenance import provenance_record

    return provenance_record(
        rule=snakemake.rule, config=snakemake.config,
        inputs=inputs if inputs is not None else list(snakemake.input), params=params,
    )


def read_all(files: Any) -> pl.DataFrame:
    """The tables in ``files``, concatenated in order; columns are aligned by name (a column
    missing from some tables is null there, dtypes widened to a common one). No files raise
    ValueError."""
    from motivation_profiles.core.provenance import read_table

    tables = [read_table(f) for f in files]
    if not tables:
        raise ValueError("read_all: no tables to read (the list of input files is empty)")
    return pl.concat(tables, how="diagonal_relaxed")
