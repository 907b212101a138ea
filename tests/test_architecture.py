"""The package layering: backends at the bottom (with the checkpoint layer and the in-process runner),
converters, parity and tasks above it and independent of each other, and no import cycle anywhere.

Imports are read from the source with `ast` (those inside functions too), so a lazy import counts.
"""
from __future__ import annotations

import ast
from pathlib import Path

from .conftest import REPO

PACKAGES = ("backends", "converters", "parity", "tasks")
# top-level package -> the project packages it may import
ALLOWED = {"backends": set(), "converters": {"backends"}, "parity": {"backends"}, "tasks": {"backends"}}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The project modules `name` imports (the most specific existing module of each import)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
                break
    return targets


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_modules():
    assert cycles(graph()) == []


def test_top_level_packages_are_layered():
    edges = graph()
    wrong = sorted(f"{source} imports {target}" for source, targets in edges.items() for target in targets
                   if target.split(".")[0] not in ALLOWED[source.split(".")[0]] | {source.split(".")[0]})
    assert wrong == []


def test_the_checks_see_cycles_and_lazy_imports():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    edges = graph()
    assert "backends.run" in edges["converters.core"]  # a module-level import
    assert "parity.oracles" in edges["parity.worker"]  # an import inside a function
