"""The conda environments of `--use-conda` runs (workflow/envs/*.yaml) agree with
pyproject.toml and hold every third-party package the code of each rule imports.

A rule's code is the package modules its entry point can run (``code_inputs(rule)``, derived
from the import graph): every import in those modules, module level or inside functions,
counts."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from motivation_profiles.pipeline.code_inputs import entry_nodes, module_file
from motivation_profiles.pipeline.registry import code_inputs, entry_point_name

REPO = Path(__file__).resolve().parents[2]
ENVS = REPO / "workflow" / "envs"
DIST = {"sklearn": "scikit-learn", "yaml": "pyyaml", "huggingface_hub": "huggingface-hub",
        "matplotlib": "matplotlib"}
ALIASES = {"matplotlib-base": "matplotlib"}
ENGINE = {"snakemake", "snakemake-executor-plugin-slurm", "pygments"}  # the workflow runner
# Installed on GPU nodes only: the vllm backend imports it when a model says `backend: vllm`
# and fails with a clear message elsewhere (tests/test_vllm_backend.py).
OPTIONAL = {"vllm"}


def _name(spec: str) -> tuple[str, str]:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    name = m.group(1).lower()
    return ALIASES.get(name, name), m.group(2).replace(" ", "")


def pyproject_deps() -> dict[str, str]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(_name(s) for s in data["project"]["dependencies"])


def env_deps(path: Path) -> dict[str, str]:
    out = {}
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        for spec in dep["pip"] if isinstance(dep, dict) else [dep]:
            name, ver = _name(spec)
            if name not in ("python", "pip"):
                out[name] = ver.lstrip("=") if ver.startswith("==") and name != "torch" else ver
    return out


def _module(path: Path, level: int, module: str | None) -> list[Path]:
    base = path.parent
    for _ in range(level - 1):
        base = base.parent
    target = base.joinpath(*module.split(".")) if module else base
    if target.with_suffix(".py").is_file():
        return [target.with_suffix(".py")]
    return [target / "__init__.py"] if (target / "__init__.py").is_file() else []


def third_party(path: Path, *, all_levels: bool, seen: set[Path],
                nodes=None) -> set[str]:
    """Top-level third-party module names imported by ``path`` (inside functions too when
    ``all_levels``; only within ``nodes`` when given), following package-relative imports at
    module level."""
    if (path, all_levels) in seen:
        return set()
    seen.add((path, all_levels))
    tree = ast.parse(path.read_text())
    if nodes is not None:
        nodes = (n for top in nodes for n in ast.walk(top))
    else:
        nodes = ast.walk(tree) if all_levels else iter(tree.body)
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                targets = _module(path, node.level, node.module)
                if not node.module:  # from . import a, b
                    targets = [p for a in node.names
                               for p in _module(path, node.level, a.name)]
                for t in targets:
                    out |= third_party(t, all_levels=False, seen=seen)
            else:
                out.add(node.module.split(".")[0])
    return {m for m in out if m not in sys.stdlib_module_names
            and m not in ("motivation_profiles", "__future__")}


def rules() -> list[tuple[str, str, list[str]]]:
    """(rule, env name, code files) for every rule declaring both an env and code inputs
    (the steering figure rules, defined in a loop, are checked as ``figure_steering_ooc``)."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    out = []
    pattern = r"^\s*(?:rule|checkpoint) (\w+):(.*?)(?=^\s*(?:rule|checkpoint) \w+:|\Z)"
    for m in re.finditer(pattern, text, re.S | re.M):
        env = re.search(r"envs/(\w+)\.yaml", m.group(2))
        code = re.search(r'code=code_inputs\((f?)"([^"]+)"\)', m.group(2))
        if env and code:
            rule = "figure_steering_ooc" if code.group(1) else code.group(2)
            out.append((m.group(1) if not code.group(1) else rule, env.group(1),
                        code_inputs(rule)))
    return out


def test_env_versions_match_pyproject():
    project = pyproject_deps()
    for path in sorted(ENVS.glob("*.yaml")):
        for name, ver in env_deps(path).items():
            assert name in project, f"{path.name}: {name} is not a dependency in pyproject.toml"
            if name == "torch":   # the env pins one build; pyproject gives the range
                assert ver.startswith("=="), f"{path.name}: pin torch"
                continue
            assert ver == project[name], f"{path.name}: {name}{ver} vs pyproject {project[name]}"


def test_ml_env_holds_every_runtime_dependency():
    missing = set(pyproject_deps()) - ENGINE - set(env_deps(ENVS / "ml.yaml"))
    assert not missing, f"envs/ml.yaml lacks {sorted(missing)}"


@pytest.mark.parametrize("rule,env,modules", rules(), ids=[r[0] for r in rules()])
def test_rule_env_has_what_its_code_imports(rule, env, modules):
    have = set(env_deps(ENVS / f"{env}.yaml"))
    needed = set()
    module, function = entry_point_name(rule)
    entry_file = module_file(module)
    for m in modules:  # the entry module counts only for the entry function (and its helpers)
        nodes = entry_nodes(module, function) if Path(m) == entry_file else None
        needed |= third_party(Path(m), all_levels=True, seen=set(), nodes=nodes)
    missing = {DIST.get(n, n) for n in needed} - have - OPTIONAL
    assert not missing, f"rule {rule} runs in envs/{env}.yaml, which lacks {sorted(missing)}"


def test_rule_scan_sees_the_rules():
    names = {r[0] for r in rules()}
    assert {"rollouts", "fit_vectors", "figure_baseline", "train_lora",
            "calibration_select"} <= names
