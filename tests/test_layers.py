"""The import floors of docs/architecture.md, read from the source: no cycles, and no module imports upward."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("collector", "pipeline")
# The composition root may import anything; the rest only what sits below it. (A prefix names a package.)
# ops.periodic is a leaf every floor may use; the rest of ops reads the running service.
OPS = ("collector.ops.metrics", "collector.ops.snapshot", "collector.ops.embedded")
TOP = ("collector.edge", "collector.app", "collector.services", "collector.__main__")
UPWARD: dict[str, tuple[str, ...]] = {
    # Below the edge: nothing imports the HTTP layer or the composition root.
    "collector.ingest": (*TOP, *OPS, "pipeline"),
    "collector.storage": (*TOP, *OPS, "collector.ingest", "pipeline"),
    # Enrichment sits between ingest (which hands it each request's policy) and storage (whose thread runs it).
    "collector.enrich": (*TOP, *OPS, "collector.ingest", "pipeline"),
    "collector.ops": (*TOP, "pipeline"),
    # ...but the snapshot, which reads the whole running service (Services, the edge's stats included) for /metrics.
    "collector.ops.snapshot": ("collector.app", "collector.__main__"),
    "collector.ops.periodic": ("collector.", "pipeline"),
    # The pipeline depends on the collector's core, never on its edge or its composition root.
    "pipeline": (*TOP, *OPS),
    # Leaves every floor may use.
    "collector.settings": (*TOP, "collector.ops", "collector.ingest", "collector.storage", "pipeline"),
    "collector.errors": (*TOP, "collector.ops", "collector.ingest", "collector.storage", "pipeline"),
    "collector.logsafe": ("collector.", "pipeline"),
    # The parent of WORKERS>1 starts processes; it must not load what the workers serve with.
    "collector.workers": ("collector.", "pipeline"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every module of ours and the modules of ours it imports, TYPE_CHECKING imports included."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            found: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found.update(f"{node.module}.{alias.name}" for alias in node.names)
            graph[name] = found
    return {name: {m for m in found if m in graph and m != name} for name, found in graph.items()}


def test_the_import_graph_of_collector_and_pipeline_has_no_cycle() -> None:
    """Reading the modules in dependency order works: no module reaches itself through its imports."""
    graph = imports()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target] if target in trail else [name, target])
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # A package's __init__ importing its own modules is not a cycle a reader trips over.
    cycles = [c for c in cycles if not any(c[0].startswith(f"{m}.") or m == c[0] for m in c[1:] if m in PACKAGES)]
    assert cycles == []


def test_no_module_imports_a_floor_above_its_own() -> None:
    """Ingest, storage, ops and the pipeline never import the HTTP edge or the composition root above them."""
    upward = []
    for name, targets in imports().items():
        # The most specific rule that names this module (or its package) applies.
        floor = max((f for f in UPWARD if name == f or name.startswith(f"{f}.")), key=len, default=None)
        if floor is not None:
            forbidden = UPWARD[floor]
            upward += [(name, t) for t in sorted(targets) if any(t == f or t.startswith(f) for f in forbidden)]
    assert upward == []


# Functions that are declarations (one table each), not logic to follow.
TABLES = {"collector/ops/metrics.py:Metrics.__init__"}


def test_modules_stay_under_400_lines_and_functions_under_60() -> None:
    """A reader takes in a module and a function whole: no module past 400 lines, no function past 60 but tables."""
    long_modules, long_functions = [], []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text()
            where = path.relative_to(ROOT).as_posix()
            if len(source.splitlines()) > 400:
                long_modules.append(where)
            for node in ast.walk(ast.parse(source)):
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.end_lineno is not None:
                        owner = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
                        name = f"{where}:{owner}{child.name}"
                        if child.end_lineno - child.lineno + 1 > 60 and name not in TABLES:
                            long_functions.append(name)
    assert (long_modules, long_functions) == ([], [])
