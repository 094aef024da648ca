"""pii's packages import one way: core <- models <- eval <- run <- feedforward (docs/architecture.md).
Read with `ast`, so nothing is imported: an import anywhere in a module (at the top or inside a
function) counts, and so does every module it reaches through others."""

import ast
import sys
from pathlib import Path

import pytest

PII = Path(__file__).resolve().parent.parent / "pii"
LAYERS = ["core", "models", "eval", "run", "feedforward"]  # each may import those before it
BASE = {"pii", "pii.errors", "pii.files"}  # the root (CONF_DIR), errors, atomic writes: every layer may use them
ENTRY_POINTS = {"pii.run.cli", "pii.feedforward.cli"}
CORE_THIRD_PARTY = {"torch", "numpy"}  # the algorithm needs no more than this


def module_name(path: Path) -> str:
    parts = path.relative_to(PII.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PII.rglob("*.py"))}


def all_imports(source: str) -> set[str]:
    """Every module named by an import in `source` (`from a import b` gives a and a.b)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def imports(name: str, source: str | None = None) -> set[str]:
    """The pii modules that module `name` imports; importing pii.x.y also runs pii.x's __init__
    (but a module's own package is already running when the module is imported: not an arrow)."""
    found = {m for m in all_imports(source or MODULES[name].read_text()) if m in MODULES}
    parents = {".".join(m.split(".")[:k]) for m in found for k in range(2, m.count(".") + 1)}
    own = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 1)}
    return (found | {p for p in parents if p in MODULES}) - {name} - own


GRAPH = {name: imports(name) for name in MODULES}


def layer(name: str) -> int | None:
    """The index of `name`'s layer in LAYERS; None for the base."""
    return None if name in BASE else LAYERS.index(name.split(".")[1])


def upward_paths(graph: dict[str, set[str]]) -> list[str]:
    """Each module's first path (breadth first, direct or through others) to a module of a later layer."""
    bad = []
    for start in sorted(graph):
        if layer(start) is None:
            if reach := sorted(m for m in graph[start] if m not in BASE):
                bad.append(f"{start} (the base) imports {reach[0]}")
            continue
        paths, queue = {start: [start]}, [start]
        while queue:
            name = queue.pop(0)
            for dep in sorted(graph[name]):
                if dep in paths:
                    continue
                paths[dep] = paths[name] + [dep]
                if layer(dep) is not None and layer(dep) > layer(start):
                    bad.append(" -> ".join(paths[dep]))
                    queue = []
                    break
                queue.append(dep)
    return bad


def test_the_graph_sees_the_imports():
    assert "pii.eval.judge" in GRAPH["pii.run.runner"] and "pii.run.compose" in GRAPH["pii.run.cli"]
    assert "pii.models" in GRAPH["pii.eval.judge"]  # `from pii import models`: the package


def test_every_module_sits_in_a_layer():
    assert {name for name in MODULES if name not in BASE and name.split(".")[1] not in LAYERS} == set()


def test_no_import_points_up_a_layer_directly_or_through_others():
    assert upward_paths(GRAPH) == []


def test_a_wrong_import_is_caught_even_through_another_module():
    # core.schedule -> models.device is direct; core.inversion reaches it through core.schedule
    graph = {**GRAPH, "pii.core.schedule": GRAPH["pii.core.schedule"] | {"pii.models.device"}}
    found = upward_paths(graph)
    assert "pii.core.schedule -> pii.models.device" in found
    assert any(p.startswith("pii.core.inversion -> pii.core.schedule -> pii.models.device") for p in found)
    graph = {**GRAPH, "pii.eval.judge": imports("pii.eval.judge", "from pii.run import outputs")}
    assert any(p.startswith("pii.eval.judge -> pii.run") for p in upward_paths(graph))


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("pii.core")))
def test_core_needs_only_torch(name):
    outside = {m.split(".")[0] for m in all_imports(MODULES[name].read_text())} - {"pii", "__future__"}
    assert outside - set(sys.stdlib_module_names) - CORE_THIRD_PARTY == set()


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
