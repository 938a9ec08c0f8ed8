"""The query frontend's import rules (the package map in ``query_frontend/__init__.py``).

Read from the source with ``ast``, so every import counts: at the top, inside a
function, or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import query_frontend

ROOT = Path(query_frontend.__file__).parent
PACKAGE = "query_frontend"
OUTSIDE_ALLOWED = ("management_frontend.state", "model_container")

# What each part of the frontend may import (besides OUTSIDE_ALLOWED and itself).
ALLOWED: dict[str, set[str]] = {
    "queries": set(),
    "config": set(),
    "caching": {"queries"},
    "batching": {"caching", "queries"},
    "rpc": {"batching", "caching", "queries"},
    "routing": {"queries"},
    "selection": {"routing", "batching", "caching", "queries"},
    "metrics": {"selection", "batching", "caching", "queries"},
    "http": {
        "queries",
        "config",
        "caching",
        "batching",
        "rpc",
        "routing",
        "selection",
        "metrics",
    },
}
TOP = {"app", "__main__", "__init__"}  # the composition root: anything


def module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def part_of(module: str) -> str:
    """The first name under query_frontend: a subpackage or a top-level module."""
    rest = module.removeprefix(PACKAGE).lstrip(".")
    return rest.split(".")[0] or "__init__"


def imports_of(module: str) -> set[str]:
    """Every module ``module`` imports, resolved to the modules (not names) imported."""
    path = MODULES[module]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}: use absolute imports"
            assert node.module is not None
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


GRAPH = {m: {i for i in imports_of(m) if i in MODULES and i != m} for m in MODULES}


def test_every_part_of_the_frontend_is_in_the_map() -> None:
    assert {part_of(m) for m in MODULES} == set(ALLOWED) | TOP


def test_the_frontend_imports_of_management_frontend_only_its_state_contract() -> None:
    bad = {
        f"{m} imports {i}"
        for m in MODULES
        for i in imports_of(m)
        if i.split(".")[0] == "management_frontend" and not i.startswith(OUTSIDE_ALLOWED)
    }
    assert not bad


def test_packages_import_only_the_layers_below_them() -> None:
    bad = sorted(
        f"{m} imports {i}"
        for m, targets in GRAPH.items()
        if part_of(m) not in TOP
        for i in targets
        if part_of(i) != part_of(m) and part_of(i) not in ALLOWED[part_of(m)]
    )
    assert not bad


def test_no_module_imports_one_that_imports_it_back() -> None:
    cycles: list[list[str]] = []
    state: dict[str, str] = {}  # "open" while on the current path, then "done"

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for i in sorted(GRAPH[m]):
            if state.get(i) == "open":
                cycles.append([*path[path.index(i) :], i])
            elif i not in state:
                visit(i, [*path, i])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not cycles
