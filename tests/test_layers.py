"""The package's one-way layers, checked by parsing every module's imports (no import is executed).

Layers, lowest first; a module may import its own layer and the ones below, never above:

1. schemas   2. matching   3. learning, outcomes, market, experiments   4. stream   5. agents
6. entry points (cli, demo, ops, testing)

Besides the layers: no cycle between packages and none between modules (lazy imports inside functions count too:
they are still a dependency), and nothing imports a project package by its folder name (``import stream``) —
after ``pip install .`` only ``tickmatch`` exists.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tickmatch"
LAYERS: dict[str, int] = {
    "schemas": 1,
    "matching": 2,
    "learning": 3,
    "outcomes": 3,
    "market": 3,
    "experiments": 3,
    "stream": 4,
    "agents": 5,
}
ENTRY_LAYER = 6  # tickmatch.cli, tickmatch.demo, tickmatch.ops, tickmatch.testing, tickmatch.__main__
FOLDER_NAMES = {*LAYERS, "bench", "tests"}


def unit(module: str) -> str:
    """``tickmatch.stream.topics`` -> ``stream``; modules directly under ``tickmatch`` are their own unit."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    return LAYERS.get(unit(module), ENTRY_LAYER)


def sources() -> dict[str, str]:
    """Module name -> source of every module of the package as it is on disk (links followed, as the wheel does)."""
    out: dict[str, str] = {}
    paths = [Path(d, f) for d, _, files in os.walk(PACKAGE, followlinks=True) for f in files if f.endswith(".py")]
    for path in sorted(paths):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path.read_text()
    return out


def imports(module: str, source: str, known: Mapping[str, str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in ``source``. ``from pkg import name`` counts
    as an import of ``pkg.name`` when that is a module of the package, else of ``pkg``."""
    is_package = any(m.startswith(module + ".") for m in known)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield (full if full in known else target), node.lineno


def violations(modules: Mapping[str, str]) -> list[str]:
    """Every broken rule in ``modules`` (name -> source), as readable lines."""
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, source in modules.items():
        for target, line in imports(module, source, modules):
            top = target.split(".")[0]
            if top in FOLDER_NAMES:
                problems.append(f"{module}:{line} imports {target!r} by folder name; use tickmatch.{target}")
                continue
            if top != "tickmatch" or target == "tickmatch":
                continue
            if layer(target) > layer(module):
                problems.append(
                    f"{module}:{line} imports {target} (layer {layer(target)}) from layer {layer(module)}: "
                    "layers import downwards only"
                )
            if target in modules and target != module:
                graph[module].add(target)
    problems += [f"module cycle: {' -> '.join(c)}" for c in cycles(graph)]
    units: dict[str, set[str]] = {}
    for module, targets in graph.items():
        units.setdefault(unit(module), set()).update(unit(t) for t in targets if unit(t) != unit(module))
    problems += [f"package cycle: {' -> '.join(c)}" for c in cycles(units)]
    return problems


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One representative cycle per strongly connected component of size > 1 (or a self-loop)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_package_imports_downwards_only_without_cycles() -> None:
    modules = sources()
    assert {"tickmatch.cli", "tickmatch.agents.app", "tickmatch.stream.topics", "tickmatch.schemas"} <= set(modules)
    assert violations(modules) == []


def test_a_planted_upward_import_is_caught() -> None:
    modules = sources()
    planted = dict(modules)
    planted["tickmatch.matching.pool"] += "\nfrom tickmatch.agents.app import create_app\n"
    assert any(
        p.startswith("tickmatch.matching.pool:") and "imports tickmatch.agents.app (layer 5) from layer 2" in p
        for p in violations(planted)
    )


def test_a_planted_cycle_and_a_folder_name_import_are_caught() -> None:
    modules = dict(sources())
    modules["tickmatch.stream.topics"] += "\ndef late() -> None:\n    from tickmatch.stream import readback\n"
    modules["tickmatch.learning.trainer"] += "\nimport matching.pool\n"
    found = violations(modules)
    assert any(p.startswith("module cycle:") and "tickmatch.stream.readback" in p for p in found), found
    assert any("imports 'matching.pool' by folder name" in p for p in found), found


def test_relative_imports_resolve_like_python() -> None:
    known = {"tickmatch.stream.topics": "", "tickmatch.stream": "", "tickmatch.stream.readback": ""}
    got = list(imports("tickmatch.stream.readback", "from .topics import ALL\nfrom . import topics\n", known))
    assert got == [("tickmatch.stream.topics", 1), ("tickmatch.stream.topics", 2)]
