"""The layout a newcomer relies on: engines grouped by concern without Dagster, no import cycles, no private names
imported across modules, and a short README whose links resolve."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("resources", "assets", "dagster_project", "benchmarks")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def project_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (a package by its own name)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
    return found


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for module, names in imports(path):
            targets |= {c for c in (module, *(f"{module}.{n}" for n in names)) if c in modules and c != name}
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_engines_are_grouped_by_concern_without_dagster() -> None:
    resources = ROOT / "resources"
    for folder in [p for p in resources.iterdir() if p.is_dir() and p.name != "__pycache__"]:
        init = folder / "__init__.py"
        assert init.is_file() and ast.get_docstring(ast.parse(init.read_text())), f"{folder} needs a docstring"
    top_level = [p.name for p in resources.glob("*.py") if p.name != "__init__.py"]
    assert len(top_level) <= 3, top_level
    for path in resources.rglob("*.py"):
        assert not [m for m, _ in imports(path) if m.split(".")[0] == "dagster"], f"{path} imports Dagster"


def test_no_private_name_is_imported_across_modules() -> None:
    offenders = [(name, module, imported) for name, path in project_modules().items()
                 for module, names in imports(path) if module.split(".")[0] in PACKAGES
                 for imported in names if imported.startswith("_") and not imported.startswith("__")]
    assert offenders == []
    assert not [p for p in (ROOT / "assets").rglob("_*.py") if p.name != "__init__.py"]


@pytest.mark.parametrize("page", ["README.md", "ARCHITECTURE.md", *[str(p.relative_to(ROOT)) for p in
                                                                      sorted((ROOT / "docs").glob("*.md"))]])
def test_links_resolve(page: str) -> None:
    text = re.sub(r"```.*?```", "", (ROOT / page).read_text(), flags=re.DOTALL)
    targets = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]
    missing = [t for t in targets if not ((ROOT / page).parent / t).exists()]
    assert missing == []


def test_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
