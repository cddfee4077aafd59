"""Every rule's code inputs are derived from the import graph of its entry point, and editing a
module reruns exactly the jobs whose code imports it."""

from __future__ import annotations

import ast
import re
import shutil
import tempfile
from modulefinder import ModuleFinder
from pathlib import Path

import pytest
from conftest import REPO, job_counts, run_snakemake, tiny_config

from motivation_profiles.pipeline import code_inputs as ci
from motivation_profiles.pipeline.registry import (
    ENTRY_POINTS,
    FIGURE_MODULES,
    code_inputs,
    entry_point,
    entry_point_name,
)

RULES_DIR = REPO / "workflow" / "rules"
PKG = REPO / "src" / "motivation_profiles"


def _rule_blocks() -> dict[str, str]:
    """rule name -> its text, for every named rule and checkpoint of workflow/rules/."""
    text = "\n".join(p.read_text() for p in sorted(RULES_DIR.glob("*.smk")))
    pattern = r"^(?:rule|checkpoint) (\w+):\n(.*?)(?=^\S|\Z)"
    return {m.group(1): m.group(2) for m in re.finditer(pattern, text, re.S | re.M)}


def all_rules_with_code() -> list[str]:
    rules = [name for name, body in _rule_blocks().items() if "script:" in body]
    return rules + [f"figure_{name}" for name, module in FIGURE_MODULES.items()
                    if module.startswith("steering")]


def test_every_script_rule_declares_its_own_derived_code_inputs():
    blocks = _rule_blocks()
    scripted = [name for name, body in blocks.items() if "script:" in body]
    assert len(scripted) >= 30
    for name in scripted:
        body = blocks[name]
        assert f'code=code_inputs("{name}")' in body, f"rule {name}: code inputs not derived"
        assert '"../scripts/run.py"' in body, name
        assert "package_code" not in body
    loop = (RULES_DIR / "steering.smk").read_text()
    assert 'code=code_inputs(f"figure_{_name}")' in loop


@pytest.mark.parametrize("rule", all_rules_with_code())
def test_entry_point_exists(rule):
    assert callable(entry_point(rule))


def _oracle(rule: str) -> set[str]:
    """Independent of code_inputs' graph walk: modulefinder (which scans nested code objects,
    i.e. imports inside functions too) run on the imports the entry function makes."""
    module, function = entry_point_name(rule)
    nodes = ci.entry_nodes(module, function)
    lines = []
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                lines.append(ast.unparse(ast.fix_missing_locations(
                    type(node)(**{k: getattr(node, k) for k in node._fields}))).strip())
    finder = ModuleFinder(path=[str(REPO / "src")])
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "entry.py"
        script.write_text("\n".join(lines) + "\n")
        finder.run_script(str(script))
    found = {m for m in finder.modules if m.startswith("motivation_profiles")}
    return found | {module} | {".".join(module.split(".")[:i])
                               for i in range(1, len(module.split(".")))}


@pytest.mark.parametrize("rule", all_rules_with_code())
def test_code_inputs_equal_the_modules_the_entry_point_imports(rule):
    declared = {str(Path(f).relative_to(REPO / "src")) for f in code_inputs(rule)}
    expected = set()
    for m in _oracle(rule):
        f = ci.module_file(m)
        assert f is not None, m
        expected.add(str(f.relative_to(REPO / "src")))
    assert declared == expected


def test_code_inputs_are_per_entry_function():
    def files(rule):
        return {Path(f).relative_to(PKG).as_posix() for f in code_inputs(rule)}

    rollouts = files("rollouts")
    # the bug this replaced: rollouts runs these but did not declare them
    assert {"models/load.py", "backends/vllm.py", "backends/hf.py", "models/hooks.py",
            "steering/vectors.py", "steering/apply.py"} <= rollouts
    # same pipeline module, other function: training code is not a document input
    assert "sdf/train.py" in files("train_lora")
    assert "sdf/train.py" not in files("generate_documents")
    assert "sdf/documents.py" not in files("train_lora")
    # a figure rule depends on its own figure module only
    assert "figures/steering.py" in files("figure_steering_ooc")
    assert "figures/profiles.py" not in files("figure_steering_ooc")
    assert {"pipeline/registry.py", "pipeline/code_inputs.py"}.isdisjoint(rollouts)
    for rule in ENTRY_POINTS:
        assert "__init__.py" in files(rule) and "core/provenance.py" in files(rule), rule


def test_helper_function_imports_count(tmp_path):
    pkg = tmp_path / "motivation_profiles"
    (pkg / "pipeline").mkdir(parents=True)
    for d in ("", "pipeline", "a", "b", "c"):
        (pkg / d).mkdir(exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from motivation_profiles.c import z\n")
    (pkg / "b" / "y.py").write_text("")
    (pkg / "c" / "z.py").write_text("def f():\n    import motivation_profiles.b.y\n")
    (pkg / "pipeline" / "p.py").write_text(
        "def _helper():\n    from motivation_profiles.a import x\n\n"
        "def entry(s):\n    _helper()\n\n"
        "def other(s):\n    from motivation_profiles.b import y\n")
    got = ci.code_modules("motivation_profiles.pipeline.p", "entry", root=pkg)
    assert got == ["motivation_profiles", "motivation_profiles.a", "motivation_profiles.a.x",
                   "motivation_profiles.b", "motivation_profiles.b.y", "motivation_profiles.c",
                   "motivation_profiles.c.z", "motivation_profiles.pipeline",
                   "motivation_profiles.pipeline.p"]
    other = ci.code_modules("motivation_profiles.pipeline.p", "other", root=pkg)
    assert "motivation_profiles.a.x" not in other and "motivation_profiles.b.y" in other


def _scratch_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, repo / name)
    for name in ("workflow", "src", "resources"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit that changes the file's content\n")


@pytest.mark.slow
def test_editing_a_module_reruns_exactly_its_jobs(tmp_path):
    repo = _scratch_repo(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    cfg = tiny_config()
    run_snakemake(work, cfg, snakefile=repo / "Snakefile")
    pkg = repo / "src" / "motivation_profiles"

    def dry() -> dict[str, int]:
        proc = run_snakemake(work, cfg, "-n", snakefile=repo / "Snakefile")
        return job_counts(proc.stdout + proc.stderr)

    # touched but unchanged: nothing (Snakemake compares checksums of small files)
    (pkg / "models" / "load.py").touch()
    assert dry() == {}
    # models/load.py runs in rollouts (the backend loads the checkpoint): not declared before
    _edit(pkg / "models" / "load.py")
    jobs = dry()
    # (the organism's baseline and the instruct model's screening baseline)
    assert jobs.get("rollouts") == 2 and "goals" not in jobs, jobs
    shutil.copy(REPO / "src/motivation_profiles/models/load.py", pkg / "models" / "load.py")
    assert dry() == {}
    # the judge's scoring module reruns the judge and its figure, nothing upstream
    _edit(pkg / "judge" / "scoring.py")
    jobs = dry()
    # (the judge tables of the organism's baseline and of the screening baseline)
    assert jobs.get("judge") == 2 and jobs.get("figure_judge_scores") == 1, jobs
    assert not {"rollouts", "metrics", "prepare_model", "goals"} & set(jobs), jobs
