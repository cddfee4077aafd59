"""Shared fixtures: tiny random-weight Llama checkpoints and config builders for DAG tests."""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY_SPEC = {
    "source": "random",
    "random": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 128, "seed": 0},
    "display_name": "tiny-random-llama",
    "backend": "hf",
    "dtype": "float32",
    "device": "cpu",
    "gpus": 0,
    "batch_size": 4,
    "max_model_len": 2048,
    "params_b": 0.001,
    "organism": "train",
}


# Session fixtures that run a whole DAG once, and the test modules that use them. Under
# pytest-xdist (`make test` runs `-n 2`) the scheduler below sends every module of one shared
# run to the same worker, so each run happens once, and starts the shared runs first; other
# modules are scheduled one module at a time (xdist's loadscope). (xdist's own `--dist
# loadgroup` marks are not applied under pytest 9 here: its node-id suffix never appears, so
# the groups were split.)
SHARED_RUNS = {
    "tiny_dag": ("tests/workflow/test_e2e.py",),
    "tiny_full_dag": ("tests/workflow/test_sdf_e2e.py", "tests/workflow/test_prompt_e2e.py",
                      "tests/workflow/test_steering_e2e.py"),
}


# the longest scopes, started first in this order (a shared run's name or a module's path)
START_FIRST = ("tiny_full_dag", "tests/workflow/test_slurm.py", "tiny_dag")


def shared_run_of(nodeid: str) -> str | None:
    module = nodeid.split("::", 1)[0]
    return next((run for run, modules in SHARED_RUNS.items() if module in modules), None)


def pytest_collection_modifyitems(config, items):
    """A test that uses a shared run from a module not listed for it would run the DAG again
    on another worker: refuse it at collection, naming the test."""
    for item in items:
        for run in SHARED_RUNS:
            if run in getattr(item, "fixturenames", ()) and shared_run_of(item.nodeid) != run:
                raise pytest.UsageError(
                    f"{item.nodeid} uses the shared run {run!r}: add its module to "
                    f"SHARED_RUNS[{run!r}] in tests/conftest.py")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return shared_run_of(nodeid) or super()._split_scope(nodeid)

        def _assign_work_unit(self, node) -> None:
            # the longest units start first (loadscope would order scopes by their number of
            # tests, which puts them last): the SLURM run mostly waits on the scheduler's
            # polls, so beside the full shared run it overlaps with that run's CPU work
            for scope in reversed(START_FIRST):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)

    return SharedRunScheduling(config, log)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from motivation_profiles.models.prepare import prepare_model

    return prepare_model("tiny", TINY_SPEC, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from motivation_profiles.models.load import load_model

    return load_model(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_dag(tmp_path_factory):
    """One run of the tiny baseline DAG (``tiny_config()``), shared by the end-to-end tests that
    read its outputs or dry-run against it (tests/workflow/test_e2e.py). A test that changes
    the working directory puts it back as it found it."""
    from types import SimpleNamespace

    work = tmp_path_factory.mktemp("tiny_dag")
    cfg = tiny_config()
    proc = run_snakemake(work, cfg)
    return SimpleNamespace(work=work, config=cfg, proc=proc)


@pytest.fixture(scope="session")
def tiny_full_dag(tmp_path_factory):
    """One run of the tiny DAG with every arm on: SDF (six branches), prompt interventions with
    the calibration checkpoint, steering (hand-written pairs, ``steering_pairs``), judge,
    profiles and figures. Shared by test_sdf_e2e, test_prompt_e2e and test_steering_e2e, which
    read its outputs and dry-run partial reruns against it; a test that edits one of its input
    files (``universes``, ``claims``) puts it back with :func:`edited`, so the next dry run
    sees the run as it was."""
    import shutil
    from types import SimpleNamespace

    from steering_pairs import write_pairs

    root = tmp_path_factory.mktemp("tiny_full_dag")
    universes, claims, work = root / "universes", root / "claims", root / "work"
    shutil.copytree(REPO / "resources/universes", universes)
    shutil.copytree(REPO / "resources/claims", claims)
    work.mkdir()
    cfg = tiny_config(sdf=True, prompt=True, steering=True)
    cfg["sdf"]["universes_dir"] = str(universes)
    cfg["prompt_interventions"]["claims_dir"] = str(claims)
    cfg["hosted"]["cache_dir"] = str(root / "cache")
    cfg["steering"]["external_pairs"] = write_pairs(root, cfg)
    cfg["steering"]["extraction"]["max_batch_tokens"] = 512
    proc = run_snakemake(work, cfg, timeout=3600)
    return SimpleNamespace(work=work, results=work / "results", config=cfg, proc=proc,
                           universes=universes, claims=claims)


@contextlib.contextmanager
def edited(path: Path, text: str):
    """Write ``text`` to ``path`` for the duration of the block, then put back the old text
    and modification time (Snakemake's mtime trigger then sees no change)."""
    old, st = path.read_text(), path.stat()
    path.write_text(text)
    try:
        yield path
    finally:
        path.write_text(old)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def load_repo_config(name: str = "config.yaml") -> dict:
    with open(REPO / name) as fh:
        return yaml.safe_load(fh)


def absolutize(config: dict) -> dict:
    """Point the config's resource paths at this checkout, so a workflow can run in a tmp dir."""
    cfg = copy.deepcopy(config)
    for key in ("system", "user_template"):
        if key == "system" and cfg["prompts"].get("system_source") is not None:
            continue  # downloaded by rule system_prompt into the run's directory
        cfg["prompts"][key] = str(REPO / cfg["prompts"][key])
    if cfg["goals"]["path"]:
        cfg["goals"]["path"] = str(REPO / cfg["goals"]["path"])
    sdf = cfg["sdf"]
    sdf["universes_dir"] = str(REPO / sdf["universes_dir"])
    sdf["generator"]["prompts_dir"] = str(REPO / sdf["generator"]["prompts_dir"])
    sdf["training"]["accelerate_config"] = str(REPO / sdf["training"]["accelerate_config"])
    pi = cfg["prompt_interventions"]
    pi["claims_dir"] = str(REPO / pi["claims_dir"])
    cfg["judge"]["rubric"] = str(REPO / cfg["judge"]["rubric"])
    st = cfg["steering"]
    st["materials_dir"] = str(REPO / st["materials_dir"])
    st["raw"]["rubric"] = str(REPO / st["raw"]["rubric"])
    for spec in cfg["models"].values():
        if spec["source"] == "simulated":
            spec["policy"] = str(REPO / spec["policy"])
    return cfg


def tiny_config(*, sdf: bool = False, prompt: bool = False, steering: bool = False,
                absolute: bool = True, **rollout_overrides) -> dict:
    """The embedded config on the tiny random model. ``sdf=False`` leaves out the SDF arm
    (tests of other stages stay fast; the model organism, organism: train, is still trained,
    with the same tiny document and dataset sizes); ``sdf=True`` keeps it with the tiny model
    as the document generator and two interventions. ``prompt=True`` adds the prompt interventions
    (A1 and B1 pairs at the standard strength, plus calibration when SDF is on).
    ``steering=True`` keeps the steering stage with small OOC splits, one random control and
    IC pairs from every judged condition. The tiny model is the judge (one sample).
    ``absolute=False`` keeps resource paths relative to the repository (the ``.test/``
    configs, run by hand from the repository root)."""
    cfg = load_repo_config()
    cfg["models"] = {"tiny": copy.deepcopy(TINY_SPEC)}
    cfg["sdf"]["enabled"] = sdf
    cfg["sdf"]["generator"]["model"] = "tiny"
    cfg["judge"].update(model="tiny", samples=1, max_tokens=6)
    cfg["prompt_interventions"].update(
        enabled=prompt, interventions=["A1_amp", "A1_sup", "B1_amp", "B1_sup"],
        strengths=["standard"])
    cfg["calibration"].update(enabled=prompt and sdf, candidates=["A1_amp", "B1_amp"])
    if sdf:
        cfg["sdf"]["interventions"] = (["A1_amp", "A1_sup", "B1_amp", "B1_sup"] if prompt
                                       else ["A1_amp", "B1_amp"])
    # the organism (organism: train) is trained whether or not the SDF arm is on
    cfg["sdf"]["generator"].update(n_doc_types=2, ideas_per_type=1, docs_per_idea=2,
                                   max_tokens={"types": 24, "ideas": 24, "document": 48,
                                               "revision": 48})
    cfg["sdf"]["filters"]["min_chars"] = 1
    cfg["sdf"]["dataset"]["max_seq_len"] = 64
    cfg["goals"]["n"] = 3
    # output_tokens 8: the tiny runs generate the output body the demo leaves out
    cfg["rollouts"].update({"seeds": [0, 1], "max_new_tokens": 8, "max_turns": 2,
                            "output_tokens": 8})
    cfg["rollouts"].update(rollout_overrides)
    cfg["metrics"]["bootstrap_samples"] = 200
    st = cfg["steering"]
    st["enabled"] = steering
    st["sources"] = ["ooc", "ic"]
    st["ooc"].update(splits={"train": 3, "validation": 2, "keyword_hard": 2},
                     candidates_per_round=6, max_rounds=2,
                     max_tokens={"dialogue": 24, "sentence": 12})
    st["ic"].update(n_train=2, n_validation=2, high=1, low=0.5, quantiles=None)  # scores
    st["random"].update(multipliers=[-4, 4])  # both signs, whatever the demo's budget
    st["fitting"].update(min_pairs=2, folds=2)
    st["layers"].update(k=1)
    st["raw"].update(max_new_tokens=8, seeds=[0])
    st["heatmap"].update(transcripts=1, max_tokens=12)
    st["sdf_alignment"]["bootstrap_samples"] = 50
    return absolutize(cfg) if absolute else cfg


# The small configs of .test/ (Snakemake's convention), runnable by hand from the repository
# root: `snakemake --cores 2 --configfile .test/<name>.yaml`. They are tiny_config()'s output,
# kept in step by tests/workflow/test_dag.py.
TEST_CONFIGS = {
    "config-tiny.yaml": {},
    "config-tiny-sdf-prompt.yaml": {"sdf": True, "prompt": True},
}


def run_snakemake(workdir: Path, config: dict, *args: str, timeout: int = 600,
                  check: bool = True, snakefile: Path | None = None
                  ) -> subprocess.CompletedProcess:
    """Run the repo's workflow (or ``snakefile``'s) in ``workdir`` with ``config`` (written
    next to it)."""
    cfg_path = workdir / "test-config.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    # model jobs start from the warm-start server (motivation_profiles.pipeline.warm), as in
    # `make demo`; MP_WARM_START=0 in the environment runs each job in its own process
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "MP_WARM_START": os.environ.get("MP_WARM_START", "1")}
    # greedy: the default ILP scheduler starts a solver at every scheduling round, which costs
    # more than it saves on two cores
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile or REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(cfg_path), "--cores", "2",
           "--scheduler", "greedy", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def analysis_rules() -> set[str]:
    """Rules that run in workflow/envs/analysis.yaml (tables and figures: no torch there).
    The steering figure rules, defined in a loop, are matched by the ``figure_`` prefix."""
    import re

    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow/rules").glob("*.smk")))
    pattern = r"^\s*(?:rule|checkpoint) (\w+):(.*?)(?=^\s*(?:rule|checkpoint)\b|\Z)"
    return {m.group(1) for m in re.finditer(pattern, text, re.S | re.M)
            if "envs/analysis.yaml" in m.group(2)}


def model_libraries_in_logs(results: Path) -> dict[str, str]:
    """Job log (path under results/logs, without .log) -> the model libraries the job had
    loaded when it finished, from the line every entry point logs
    (motivation_profiles.pipeline.common.run)."""
    import re

    out = {}
    for path in sorted((results / "logs").rglob("*.log")):
        found = re.findall(r"model libraries loaded: (.*)$", path.read_text(), flags=re.M)
        if found:
            out[str(path.relative_to(results / "logs").with_suffix(""))] = found[-1]
    return out


def assert_table_jobs_load_no_model_library(results: Path) -> int:
    """Every job of a table or figure rule (analysis env) loaded neither torch nor
    transformers; returns how many such jobs were checked."""
    analysis = analysis_rules()
    loaded = model_libraries_in_logs(results)
    checked = {log: libs for log, libs in loaded.items()
               if log.split("/")[0] in analysis or log.startswith("figure_")}
    heavy = {log: libs for log, libs in checked.items() if libs != "none"}
    assert not heavy, f"table/figure jobs loaded model libraries: {heavy}"
    return len(checked)


def job_counts(output: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table from a run's output."""
    counts: dict[str, int] = {}
    lines = output.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    except StopIteration:
        return counts
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def dry_run_jobs(output: str) -> list[dict]:
    """The jobs of a dry run's output (``snakemake -n``): one dict per job with ``rule``,
    ``input`` and ``output`` (lists of paths) and ``wildcards`` (dict)."""
    import re

    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \S+:\n)", "\n" + output):
        head = re.match(r"(?:local)?(?:rule|checkpoint) (\S+):\n", block)
        if head is None:
            continue
        job = {"rule": head.group(1), "input": [], "output": [], "wildcards": {}}
        for line in block.splitlines()[1:]:
            key, _, value = line.strip().partition(": ")
            if key in ("input", "output"):
                job[key] = [v.strip() for v in value.split(", ") if v.strip()]
            elif key == "wildcards":
                job["wildcards"] = dict(kv.split("=", 1) for kv in value.split(", "))
            elif not line.startswith("    "):
                break
        jobs.append(job)
    return jobs
