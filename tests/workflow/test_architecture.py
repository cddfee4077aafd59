"""The package's dependency rule: stages depend one way (the layers contract in
pyproject.toml, checked by import-linter) and no module is part of an import cycle. Both checks
are shown to fail on a scratch copy of the package with an upward import and with a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest
from conftest import REPO

PACKAGE = "motivation_profiles"


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    lint = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(lint), "--config", str(config), "--no-cache"],
                          capture_output=True, text=True, env=env, cwd=src, timeout=300)


def import_cycles(src: Path) -> list[list[str]]:
    """Strongly connected components of more than one module (import cycles), in a fresh
    interpreter so that a scratch copy's modules are read, not this process's."""
    code = ("import json, sys, grimp; from tests_cycles import cycles; "
            f"print(json.dumps(cycles(grimp.build_graph({PACKAGE!r}, cache_dir=None))))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(Path(__file__).parent)])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    import json

    return json.loads(out.stdout)


def _scratch(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / PACKAGE, src / PACKAGE,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return src


def test_layers_contract_holds():
    proc = _lint(REPO / "src", REPO / "pyproject.toml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_no_import_cycle():
    assert import_cycles(REPO / "src") == []


def test_contract_fails_on_an_upward_import(tmp_path):
    src = _scratch(tmp_path)
    hashing = src / PACKAGE / "core" / "hashing.py"  # core must import nothing internal
    hashing.write_text(hashing.read_text() + "\n\ndef _up():\n"
                       "    from motivation_profiles.metrics import rates  # noqa: F401\n")
    proc = _lint(src, tmp_path / "pyproject.toml")
    assert proc.returncode != 0
    assert "motivation_profiles.core.hashing -> motivation_profiles.metrics.rates" in proc.stdout


def test_cycle_check_fails_on_a_cycle(tmp_path):
    src = _scratch(tmp_path)
    a, b = src / PACKAGE / "steering" / "names.py", src / PACKAGE / "steering" / "plan.py"
    assert "motivation_profiles.steering.names" in b.read_text()  # plan imports names
    a.write_text(a.read_text() + "\n\ndef _back():\n"
                 "    from motivation_profiles.steering import plan  # noqa: F401\n")
    cycles = import_cycles(src)
    assert [sorted(c) for c in cycles] == [["motivation_profiles.steering.names",
                                            "motivation_profiles.steering.plan"]]


@pytest.mark.parametrize("module", ["core", "models", "backends"])
def test_lower_layers_import_no_stage(module):
    graph = grimp.build_graph(PACKAGE)
    stages = {"goals", "rollouts", "judge", "metrics", "prompts", "sdf", "steering", "figures",
              "config", "pipeline"}
    for m in graph.find_descendants(f"{PACKAGE}.{module}"):
        for imported in graph.find_modules_directly_imported_by(m):
            parts = imported.split(".")
            assert len(parts) < 2 or parts[1] not in stages, f"{m} imports {imported}"
