"""The direction of imports between Schooner's packages, as ``docs/architecture.md`` draws it.

Every ``import`` in the four packages is read with ``ast`` (at module level, inside
functions and under ``TYPE_CHECKING`` alike: a lazy import is still a dependency), and
checked against the allowed directions: no package reaches into one it must not, the
parts of each frontend import only the layers below them (the maps in
``query_frontend/__init__.py`` and ``management_frontend/__init__.py``), and no two
modules import each other, directly or round a longer circle. The state contract and
the admin client are also imported for real with the web framework and the Redis
client made unimportable.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("model_container", "management_frontend", "query_frontend", "admin")
CONTRACT = "management_frontend.state"

# Which of our packages each package may import (itself always).
ALLOWED: dict[str, tuple[str, ...]] = {
    "model_container": (),
    CONTRACT: ("model_container.protocol",),
    "management_frontend": ("model_container",),
    "query_frontend": (CONTRACT, "model_container"),
    "admin": (CONTRACT, "model_container"),
}


# The parts of the two frontends, lowest first: what each part may import of the others
# (the maps in their __init__ docstrings). The composition root may import any part.
LAYERS: dict[str, dict[str, set[str]]] = {
    "query_frontend": {
        "queries": set(),
        "config": set(),
        "cancellation": set(),
        "caching": {"queries"},
        "observability": {"queries"},
        "batching": {"caching", "queries"},
        "rpc": {"batching", "caching", "queries", "cancellation"},
        "routing": {"queries", "cancellation"},
        "selection": {"routing", "batching", "caching", "queries", "cancellation"},
        "composition": {"selection", "routing", "batching", "queries"},
        "metrics": {"selection", "batching", "caching", "queries"},
        "supervision": {"cancellation"},
        "telemetry": {
            *("metrics", "selection", "batching", "caching", "routing", "queries"),
            "cancellation",
        },
        "http": {
            *("queries", "config", "cancellation", "caching", "batching", "rpc", "routing"),
            *("selection", "metrics", "supervision", "observability", "composition"),
        },
    },
    "management_frontend": {
        "state": set(),
        "errors": set(),
        "config": {"state"},
        "storage": {"state", "errors"},
        "telemetry": {"state", "storage"},
        "ui": set(),
        "api": {"state", "errors", "storage", "telemetry", "ui"},
    },
}
COMPOSITION_ROOTS: dict[str, set[str]] = {
    "query_frontend": {"app", "__main__", "__init__"},
    "management_frontend": {"app", "cli", "__main__", "__init__"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _imported_names(name: str) -> Iterator[str]:
    """What ``name`` imports: ``from pkg import mod`` is mod (not pkg's ``__init__``, which
    Python runs on the way but which is no dependency of the importer's choosing), while
    ``from pkg import Name`` is pkg."""
    tree = ast.parse(modules()[name].read_text(), filename=str(modules()[name]))
    package = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in modules() else base


@cache
def imports_of(name: str) -> frozenset[str]:
    """The modules of ours that ``name`` imports (a package stands for its ``__init__``)."""
    ours = modules()
    return frozenset(n for n in _imported_names(name) if n in ours and n != name)


def owner(name: str) -> str:
    """The most specific entry of ``ALLOWED`` that ``name`` falls under."""
    candidates = [p for p in ALLOWED if name == p or name.startswith(p + ".")]
    return max(candidates, key=len)


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def may_import(name: str, target: str) -> bool:
    home = owner(name)
    own = home if home == CONTRACT else home.split(".")[0]  # the contract: only itself
    return within(target, own) or any(within(target, allowed) for allowed in ALLOWED[home])


def test_every_package_imports_only_what_it_may() -> None:
    wrong = [
        f"{name} imports {target}"
        for name in modules()
        for target in sorted(imports_of(name))
        if not may_import(name, target)
    ]
    assert wrong == []


def part(name: str) -> str:
    """The first name under a top-level package: a subpackage or a top-level module."""
    rest = name.partition(".")[2]
    return rest.split(".")[0] or "__init__"


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_every_part_of_a_frontend_is_in_its_map(package: str) -> None:
    parts = {part(m) for m in modules() if within(m, package)}
    assert parts == set(LAYERS[package]) | COMPOSITION_ROOTS[package]


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_the_parts_of_a_frontend_import_only_the_layers_below_them(package: str) -> None:
    layers, root = LAYERS[package], COMPOSITION_ROOTS[package]
    wrong = sorted(
        f"{name} imports {target}"
        for name in modules()
        if within(name, package) and part(name) not in root
        for target in imports_of(name)
        if within(target, package)
        and part(target) != part(name)
        and part(target) not in layers[part(name)]
    )
    assert wrong == []


def _cycles() -> list[list[str]]:
    """Strongly connected components of the module graph with more than one module."""
    graph = {name: sorted(imports_of(name)) for name in modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return found


def test_no_module_imports_itself_round_a_circle() -> None:
    # A package's __init__ that re-exports its modules is not a circle with them unless
    # one of those modules imports the package back.
    assert _cycles() == []


@pytest.mark.parametrize(
    ("module", "blocked"),
    [
        (CONTRACT, ["fastapi", "starlette", "pydantic", "uvicorn", "redis", "httpx"]),
        ("admin", ["fastapi", "starlette", "pydantic", "uvicorn", "redis"]),
    ],
)
def test_imports_without_the_web_framework_or_the_redis_client(
    module: str, blocked: list[str]
) -> None:
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # any import of it now fails\n"
        f"import {module}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
