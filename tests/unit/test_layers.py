"""The package's layering, read from its imports with ``ast`` (README, "Layout"): no import cycle between
modules, core/ imports nothing of the package outside core/, and no module imports from a higher layer.

Every import counts: module level, inside functions (lazy imports) and under ``TYPE_CHECKING``. An import of
``reer_assets.a.b`` is an edge to the deepest module of that name; ``from reer_assets.a import b`` to the module
``a.b`` when there is one, else to ``a``. Imports by name in a string (the runners start
``reer_assets.workloads.<stage>`` by module name) are not imports and are not read.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

PACKAGE = "reer_assets"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

# Lowest first; a module may import from its own layer or a lower one, never a higher one. Each line says why
# its layer sits where it does.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),  # pure REER logic: given its settings and data, it imports nothing of the package outside core/
    ("__init__", "settings", "data", "progress"),  # leaves: the version, the environment, bundled files, bars
    ("lib",),  # storage paths, the lineage store, profiles, the configured domains: no model code
    ("backends",),  # model code over core/ and lib/ (a backend may record to lineage: backends/batch.py)
    ("workloads",),  # the out-of-process programs: backends applied to a partition's rows
    ("runtime",),  # where and how runs run (runners start workloads by module name), recovery, a run's plan
    ("defs",),  # the Dagster assets per stage, wired to the runtime's resources
    ("definitions",),  # the one Definitions object over defs/
    ("perf", "demo"),  # throughput benchmarks and `make demo`, over the definitions
    ("cli",),  # the `reer` command, over everything
)
RANK = {area: rank for rank, areas in enumerate(LAYERS) for area in areas}

# defs/ keeps the stage folders and thin shared files; run machinery lives in runtime/, shared helpers in lib/
DEFS_SHARED_FILES = {"__init__", "automation", "jobs", "partitions", "resources", "sensors", "stage"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _known(name: str) -> str | None:
    """The deepest module of the package that ``name`` is, or is inside of."""
    mods = modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


@lru_cache(maxsize=1)
def imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its file)."""
    mods = modules()
    out: dict[str, set[str]] = defaultdict(set)
    for module, path in mods.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    targets.append(f"{source}.{alias.name}" if f"{source}.{alias.name}" in mods else source)
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    known = _known(target)
                    if known and known != module:
                        out[module].add(known)
    return out


def area(module: str) -> str:
    """The top-level part of the package a module belongs to: ``core``, ``lib``, ``cli``, ``settings``..."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(set(edges) | {t for targets in edges.values() for t in targets}):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def test_the_import_reader_sees_the_package():
    edges = imports()
    assert len(modules()) > 100
    # edges the reader must see: at module level, and lazy ones inside a function
    assert "reer_assets.core.schemas" in edges["reer_assets.core.trajectories"]
    assert "reer_assets.runtime.recovery" in edges["reer_assets.defs.sensors"]  # inside the sensor's function
    assert "reer_assets.runtime.plan" in edges["reer_assets.defs.planning.assets"]  # inside the asset's function


def test_no_import_cycle():
    assert cycles(imports()) == []


def test_every_part_of_the_package_has_a_layer():
    assert {area(m) for m in modules()} - set(RANK) == set(), "place the new part in LAYERS"


def test_core_imports_nothing_of_the_package_outside_core():
    outside = sorted(f"{m} -> {t}" for m, targets in imports().items() if area(m) == "core"
                     for t in targets if area(t) != "core")
    assert outside == []


def test_no_import_from_a_lower_layer_up_to_a_higher_one():
    upward = sorted(f"{m} ({area(m)}) -> {t} ({area(t)})" for m, targets in imports().items()
                    for t in targets if RANK[area(t)] > RANK[area(m)])
    assert upward == []


def test_the_cycle_and_layer_checks_catch_what_they_should():
    edges = {"reer_assets.lib.a": {"reer_assets.lib.b"}, "reer_assets.lib.b": {"reer_assets.lib.c"},
             "reer_assets.lib.c": {"reer_assets.lib.a", "reer_assets.core.d"}}
    assert cycles(edges) == [["reer_assets.lib.a", "reer_assets.lib.b", "reer_assets.lib.c"]]
    assert cycles({"reer_assets.lib.a": {"reer_assets.lib.b"}}) == []
    order = ["core", "settings", "lib", "backends", "workloads", "runtime", "defs", "definitions", "cli"]
    assert [RANK[a] for a in order] == sorted(RANK[a] for a in order)


def test_defs_holds_stage_folders_and_thin_shared_files():
    files = {p.stem for p in (ROOT / "defs").glob("*.py")}
    assert files <= DEFS_SHARED_FILES, f"move {sorted(files - DEFS_SHARED_FILES)} out of defs/ (runtime/ or lib/)"


def test_every_run_config_derives_from_the_one_base():
    """An asset's run config derives from lib/run_config.py's RunConfig (shared fields declared once there)."""
    direct = sorted(f"{m}.{node.name}" for m, path in modules().items() if m.startswith(f"{PACKAGE}.defs.")
                    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                    if isinstance(node, ast.ClassDef)
                    and any(ast.unparse(base) in ("dg.Config", "Config", "dagster.Config") for base in node.bases))
    assert direct == [], "derive from reer_assets.lib.run_config.RunConfig (or one of its field groups)"


def _imported_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and not node.level:
        return [node.module or ""]
    return []


def test_dagsters_private_api_is_used_in_one_module():
    private = sorted({m for m, path in modules().items()
                      for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                      if any(name.startswith("dagster._") for name in _imported_names(node))})
    assert private == ["reer_assets.runtime.dagster_internals"]
