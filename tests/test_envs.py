"""The conda environments of `--use-conda` runs (envs/*.yaml) agree with pyproject.toml and hold
every third-party package the code of each rule imports.

A rule's code is the package modules it declares with ``package_code(...)``: every import in
those modules (module level or inside functions) counts, and the module-level imports of the
package modules they import, transitively."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "motivation_profiles"
DIST = {"sklearn": "scikit-learn", "yaml": "pyyaml", "huggingface_hub": "huggingface-hub",
        "matplotlib": "matplotlib"}
ALIASES = {"matplotlib-base": "matplotlib"}
ENGINE = {"snakemake", "snakemake-executor-plugin-slurm", "pygments"}  # the workflow runner


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


def third_party(path: Path, *, all_levels: bool, seen: set[Path]) -> set[str]:
    """Top-level third-party module names imported by ``path`` (inside functions too when
    ``all_levels``), following package-relative imports at module level."""
    if (path, all_levels) in seen:
        return set()
    seen.add((path, all_levels))
    tree = ast.parse(path.read_text())
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
    """(rule, env name, package modules) for every rule declaring both."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))
    out = []
    for m in re.finditer(r"^\s*rule (\w+):(.*?)(?=^\s*rule \w+:|\Z)", text, re.S | re.M):
        env = re.search(r"envs/(\w+)\.yaml", m.group(2))
        code = re.search(r"package_code\(([^)]*)\)", m.group(2))
        if env and code:
            out.append((m.group(1), env.group(1), re.findall(r'"([^"]+)"', code.group(1))))
    return out


def test_env_versions_match_pyproject():
    project = pyproject_deps()
    for path in sorted((REPO / "envs").glob("*.yaml")):
        for name, ver in env_deps(path).items():
            assert name in project, f"{path.name}: {name} is not a dependency in pyproject.toml"
            if name == "torch":   # the env pins one build; pyproject gives the range
                assert ver.startswith("=="), f"{path.name}: pin torch"
                continue
            assert ver == project[name], f"{path.name}: {name}{ver} vs pyproject {project[name]}"


def test_ml_env_holds_every_runtime_dependency():
    missing = set(pyproject_deps()) - ENGINE - set(env_deps(REPO / "envs" / "ml.yaml"))
    assert not missing, f"envs/ml.yaml lacks {sorted(missing)}"


@pytest.mark.parametrize("rule,env,modules", rules(), ids=[r[0] for r in rules()])
def test_rule_env_has_what_its_code_imports(rule, env, modules):
    have = set(env_deps(REPO / "envs" / f"{env}.yaml"))
    needed = set()
    for m in modules:
        needed |= third_party(PKG / m, all_levels=True, seen=set())
    missing = {DIST.get(n, n) for n in needed} - have
    assert not missing, f"rule {rule} runs in envs/{env}.yaml, which lacks {sorted(missing)}"


def test_rule_scan_sees_the_rules():
    names = {r[0] for r in rules()}
    assert {"rollouts", "fit_vectors", "figure_baseline", "train_lora"} <= names
