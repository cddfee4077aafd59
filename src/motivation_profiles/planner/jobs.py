"""Every job a config's default target asks for, read from Snakemake's own DAG.

``dag_jobs(config, workdir)`` builds the DAG of the repository's ``Snakefile`` in-process
through Snakemake's Python API (``snakemake.api``: the same parsing and DAG construction as
``snakemake -n``, no job is executed) and returns one :class:`Job` per job in it, with its rule
and wildcards. There is no copy of the workflow's job logic here, so a new rule, condition or
model source is counted as soon as the DAG has it (``tests/planner/test_jobs.py`` checks the
jobs against the dry run of the shipped configs). Every job of the default target is listed,
whether or not its outputs already exist in ``workdir``: the plan is the cost of the whole run,
as a dry run in a fresh directory lists it.

The calibration conditions, which the DAG knows only once the ``calibration_select``
checkpoint has run, are listed apart by ``calibration_jobs`` from the prompt plan, as an upper
bound (every candidate selected, up to ``calibration.max_per_family`` per family).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from motivation_profiles.prompts.plan import PromptPlan
from motivation_profiles.sdf.plan import SDFPlan
from motivation_profiles.steering.plan import SteeringPlan

SNAKEFILE = Path(__file__).resolve().parents[3] / "Snakefile"
"""The workflow of this checkout (``src/motivation_profiles/planner/`` -> the repo root)."""

TARGETS = {
    # the name a cost formula reads, for rules whose wildcards split it
    "judge_raw": lambda w: f"raw-{w['rawcond']}",  # judges rollouts/{model}/raw-{rawcond}
    "ooc_pairs": lambda w: f"ooc_{w['concept']}_{w['split']}",
    "ic_pairs": lambda w: f"ic_{w['concept']}",
}


@dataclass(frozen=True)
class Job:
    rule: str
    model: str | None = None
    target: str | None = None  # condition, universe, pair set, vector ... (see ``target_of``)
    wildcards: tuple[tuple[str, str], ...] = field(default=(), compare=False)


def target_of(rule: str, wildcards: Mapping[str, str]) -> str | None:
    """What a job is about besides its model: the pair set of ``ooc_pairs`` / ``ic_pairs``,
    ``raw-<condition>`` for ``judge_raw``, else its one other wildcard (condition, universe,
    pair set), or ``name=value`` pairs joined by ``/`` when there are several."""
    if rule in TARGETS:
        return TARGETS[rule](wildcards)
    rest = {k: v for k, v in wildcards.items() if k != "model"}
    if not rest:
        return None
    if len(rest) == 1:
        return next(iter(rest.values()))
    return "/".join(f"{k}={v}" for k, v in rest.items())


def job_from(rule: str, wildcards: Mapping[str, str]) -> Job:
    wc = {str(k): str(v) for k, v in wildcards.items()}
    return Job(rule, wc.get("model"), target_of(rule, wc), tuple(wc.items()))


def dag_jobs(config: Mapping[str, Any], workdir: str | Path = ".",
             snakefile: str | Path = SNAKEFILE) -> list[Job]:
    """The jobs of the default target (``rule all``) of ``snakefile`` run with ``config`` in
    ``workdir`` (relative paths of the config resolve there), from Snakemake's DAG.

    Raises ``ValueError`` naming the problem when the workflow cannot be parsed or its DAG
    cannot be built (a missing input file, a bad config)."""
    from snakemake.api import SnakemakeApi
    from snakemake.exceptions import RuleException, WorkflowError
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        OutputSettings,
        ResourceSettings,
    )

    snakefile = Path(snakefile).resolve()
    if not snakefile.is_file():
        raise ValueError(f"no Snakefile at {snakefile}: the planner reads the DAG of the "
                         "workflow of this checkout (install the package editable from it)")
    workdir = Path(workdir).resolve()
    if not workdir.is_dir():
        raise ValueError(f"planner working directory {workdir} is not a directory")
    cwd, smk_log = os.getcwd(), logging.getLogger("snakemake.logging")
    level = smk_log.level
    quiet = OutputSettings(dryrun=True, enable_file_logging=False,
                           log_level_override=logging.WARNING)  # no "Building DAG of jobs"
    try:
        with SnakemakeApi(quiet) as api:
            wf = api.workflow(ResourceSettings(cores=1),
                              ConfigSettings(config=_plain(config)),
                              snakefile=snakefile, workdir=workdir)
            wf.dag(DAGSettings())  # sets the workflow's DAG settings (default target)
            # what ``DAGApi.printdag`` does before printing: the DAG, nothing executed
            workflow = wf._workflow
            workflow._prepare_dag(forceall=False, ignore_incomplete=True,
                                  lock_warn_only=True, nolock=True)
            workflow._build_dag()
            jobs = [job_from(j.rule.name, j.wildcards_dict) for j in workflow.dag.jobs]
    except (WorkflowError, RuleException) as exc:
        raise ValueError(f"snakemake could not build the DAG of {snakefile} in {workdir}: "
                         f"{exc}") from exc
    finally:
        os.chdir(cwd)
        smk_log.setLevel(level)
    return sorted(jobs, key=lambda j: (j.rule, j.model or "", j.target or ""))


def _plain(value: Any) -> Any:
    """The config as plain dicts and lists (Snakemake merges and validates it itself)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class Plans:
    """The SDF, prompt and steering plans of one config (the formulas read training budgets,
    claims and OOC pair counts from them; the calibration bound reads its candidates)."""

    config: Mapping[str, Any]
    sdf: SDFPlan = field(init=False)
    prompt: PromptPlan = field(init=False)
    steering: SteeringPlan = field(init=False)

    def __post_init__(self) -> None:
        self.sdf = SDFPlan.from_config(self.config)
        self.prompt = PromptPlan.from_config(self.config, self.sdf)
        self.steering = SteeringPlan.from_config(self.config)

    def calibration_candidates(self, model: str) -> list[str]:
        """Upper bound of the checkpoints calibration_select keeps for ``model``: every
        candidate, at most ``max_per_family`` per family (A, B)."""
        if model not in self.prompt.calibration_models:
            return []
        cap = self.config["calibration"]["max_per_family"]
        out: list[str] = []
        for family in ("A", "B"):
            members = [c for c in self.prompt.candidates() if c.startswith(family)]
            out += members if cap is None else members[:cap]
        return out


def calibration_jobs(config: Mapping[str, Any], known: Iterable[Job]) -> list[Job]:
    """Jobs that appear once ``calibration_select`` ran (not in a first DAG): rollouts,
    metrics and judge of every calibration condition, as an upper bound. ``known`` are the
    DAG's jobs: conditions already in it are not repeated, and a model whose selection the DAG
    already knows (its checkpoint's output exists, so its calibration conditions are in the
    DAG) gets no bound."""
    p = Plans(config)
    static = {(j.model, j.target) for j in known if j.rule == "rollouts"}
    jobs = []
    for m in p.prompt.calibration_models:
        conditions = p.prompt.calibration_conditions(p.calibration_candidates(m))
        if any((m, c) in static for c in conditions if "@" in c):
            continue  # selection known (checkpoint + claim conditions): in the DAG's table
        for c in conditions:
            if (m, c) in static:
                continue
            jobs += [Job("rollouts", m, c), Job("metrics", m, c), Job("judge", m, c)]
    return jobs


__all__ = ["Job", "Plans", "SNAKEFILE", "calibration_jobs", "dag_jobs", "job_from",
           "target_of"]
