"""Which package modules a rule's entry point runs, derived from the import graph.

A rule's ``code`` inputs are the files of every package module its entry point can execute, so
that editing one reruns exactly the jobs whose code imports it. They are computed here from the
source (``ast``), never listed by hand:

1. the entry point's own module, its module-level imports, the imports inside the entry
   function's body and inside every function of the same module it calls by name (helpers);
2. then, for every package module reached, all of its imports, module-level and inside
   functions alike (a function-level import runs whenever that function does), transitively;
3. with each module's parent ``__init__.py`` files, which Python runs on import.

Only modules of this package count: a library upgrade is the environment's business (its
version is in the conda env files and in provenance), not a code input.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "motivation_profiles"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_file(module: str, root: Path = PACKAGE_DIR) -> Path | None:
    """The file of ``module`` (dotted, starting with the package name), or None."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_in(nodes: Iterable[ast.AST], module: str, is_package: bool,
               root: Path = PACKAGE_DIR) -> set[str]:
    """Package modules imported by any import statement within ``nodes`` (recursively)."""
    found: set[str] = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(node, module, is_package)
                if target is None:
                    continue
                # `from pkg import sub` imports the submodule sub when there is one
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            else:
                continue
            found.update(n for n in names if module_file(n, root) is not None)
    return found


@cache
def _module_imports(module: str, root: Path = PACKAGE_DIR) -> frozenset[str]:
    """Every package module ``module`` imports anywhere in its source."""
    path = module_file(module, root)
    assert path is not None, module
    tree = _parse(path)
    return frozenset(imports_in([tree], module, path.name == "__init__.py", root))


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def closure(modules: Iterable[str], root: Path = PACKAGE_DIR, *,
            unexpanded: Iterable[str] = ()) -> set[str]:
    """``modules`` and everything they import, transitively, with their parent packages.
    Modules in ``unexpanded`` are kept without following their imports (the entry point's
    own module, whose relevant imports :func:`entry_imports` has already chosen)."""
    todo = list(modules)
    keep = set(unexpanded)
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(_parents(m))
        if m not in keep:
            todo.extend(_module_imports(m, root))
    return seen


def entry_nodes(module: str, function: str, root: Path = PACKAGE_DIR) -> list[ast.AST]:
    """The parts of the entry point's module that run for ``function``: its module-level
    imports, the function, and every function of the module it calls by name (helpers)."""
    path = module_file(module, root)
    if path is None:
        raise ValueError(f"no module {module} in the package")
    tree = _parse(path)
    functions = {n.name: n for n in tree.body
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if function not in functions:
        raise ValueError(f"{module} has no function {function!r}")
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    reached, todo = set(), [function]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        for node in ast.walk(functions[name]):
            if (isinstance(node, ast.Name) and node.id in functions
                    and node.id not in reached):
                todo.append(node.id)
    return top_level + [functions[n] for n in sorted(reached)]


def entry_imports(module: str, function: str, root: Path = PACKAGE_DIR) -> set[str]:
    """Step 1 above: the entry point's module and the modules it imports for ``function``."""
    return {module} | imports_in(entry_nodes(module, function, root), module, False, root)


def code_modules(module: str, function: str, root: Path = PACKAGE_DIR) -> list[str]:
    """Every package module the entry point ``module.function`` can run, sorted."""
    return sorted(closure(entry_imports(module, function, root), root, unexpanded=[module]))


def code_files(module: str, function: str, root: Path = PACKAGE_DIR) -> list[Path]:
    """The files of :func:`code_modules`."""
    files = [module_file(m, root) for m in code_modules(module, function, root)]
    return sorted(f for f in files if f is not None)
