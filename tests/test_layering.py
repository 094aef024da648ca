"""Layering (issue 10): pii's modules import one way. Read with `ast`, so nothing is imported:
an import anywhere in a module (at the top or inside a function) counts."""

import ast
from pathlib import Path

import pytest

PII = Path(__file__).resolve().parent.parent / "pii"
ENTRY_POINTS = {"pii.cli", "pii.feedforward.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PII.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PII.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The pii modules that module `name` imports (`from pii import x` counts as pii.x when x is a module)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {m for m in found if m in MODULES}


GRAPH = {name: imports(name) - {name} for name in MODULES}


def test_the_graph_sees_the_imports():
    assert "pii.judge" in GRAPH["pii.runner"] and "pii.compose" in GRAPH["pii.cli"]


def test_no_import_cycles():
    def visit(name, path):
        for dep in sorted(GRAPH[name]):
            if dep in path:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in done:
                visit(dep, path + [dep])
        done.add(name)

    done: set[str] = set()
    for name in MODULES:
        visit(name, [name])


@pytest.mark.parametrize("name", sorted(set(MODULES) - ENTRY_POINTS))
def test_library_modules_never_import_an_entry_point(name):
    assert not GRAPH[name] & ENTRY_POINTS, f"{name} imports {sorted(GRAPH[name] & ENTRY_POINTS)}"


def test_the_judge_and_feedforward_never_import_the_pii_runner():
    assert "pii.runner" not in GRAPH["pii.judge"]
    for name in MODULES:
        if name.startswith("pii.feedforward"):
            assert "pii.runner" not in GRAPH[name], f"{name} imports pii.runner"
