"""The house rules of the code base, checked on its source (issue 8, docs/style.md).

- Data flows one way: no import cycle among the modules of tuner/, workers/ and
  search_spaces/, counting the imports inside functions (not those under TYPE_CHECKING).
- The faces (tuner/cli, tuner/api) never import the coordinator or its scheduling modules.
- The coordinator side never imports the Ray side's trainer; statistics never the scheduler.

The size of functions and classes is ruff's to guard (``make lint``; pyproject.toml
``[tool.ruff.lint]``): C901 and PLR0911/0912/0913/0915/0917 for functions, PLR0904
(too many public methods) for classes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tuner", "workers", "search_spaces")
SCHEDULER = {"tuner.engine.coordinator", "tuner.engine.ledger", "tuner.engine.recovery",
             "tuner.engine.cluster"}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # Alembic's scripts are loaded by Alembic, not imported
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that runs, at module level or inside a function."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for child in node.orelse for n in _runtime_imports(child))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _runtime_imports(node)


def _imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                     for alias in node.names]
        out.update(name for name in names if name in MODULES and name != module)
    return out


GRAPH = {module: _imports_of(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_source_tree_is_found() -> None:
    assert {"tuner.engine.coordinator", "tuner.results", "workers.actor",
            "search_spaces"} <= set(MODULES)


def test_no_import_cycle_among_our_modules() -> None:
    assert _cycles() == []


@pytest.mark.parametrize("face", ["tuner.cli", "tuner.api"])
def test_the_faces_never_import_the_scheduler(face: str) -> None:
    offenders = {module: sorted(GRAPH[module] & SCHEDULER)
                 for module in MODULES if module.startswith(face) and GRAPH[module] & SCHEDULER}
    assert offenders == {}


@pytest.mark.parametrize("module", ["tuner.results", "tuner.analysis.statistics",
                                    "tuner.analysis.plots", "tuner.analysis.report",
                                    "tuner.analysis.export"])
def test_results_statistics_export_and_report_never_import_the_scheduler(module: str) -> None:
    assert GRAPH[module] & SCHEDULER == set()


def test_the_coordinator_side_never_imports_the_trainer() -> None:
    offenders = sorted(m for m in MODULES if m.startswith("tuner") and "workers.trainer" in
                       GRAPH[m])
    assert offenders == []
