"""The package's structure: layers, imports and module sizes (README, "Architecture").

Read from the source with ``ast``, so every import counts: at the top of a module, inside a
function (a lazy import) or under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "dask_reservoir"
NAME = "dask_reservoir"

# Layers from the bottom up: a module may import its own layer and the layers below it.
LAYERS = {"errors": 0, "_core": 1, "_worker": 2, "_source": 3, "_runtime": 4, "_facade": 5}
TOP = 5  # the facade and the public modules: reservoir, torch, cli, demo, __init__, __main__

# About 400 lines per module: the limit leaves room for a docstring example or two.
MAX_LINES = 450

# What only the runtime may use: threads that run, futures, processes, the dask client.
RUNTIME_ONLY = ("distributed", "concurrent", "multiprocessing", "asyncio", "subprocess", "socket")
THREAD_STARTERS = ("Thread", "Timer")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def imports(module: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import of ``module``."""
    found: list[tuple[str, str | None, int]] = []
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:  # `from package import module`
                    found.append((f"{base}.{alias.name}", None, node.lineno))
                else:
                    found.append((base, alias.name, node.lineno))
    return found


def internal(target: str) -> str | None:
    """The package module ``target`` names (a module or a name inside one), else None."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {
    m: sorted({t for name, _, _ in imports(m) if (t := internal(name)) and t != m and t != NAME})
    for m in MODULES
    if m != NAME  # the package's __init__ imports the public names from everywhere
}


def test_every_module_is_in_a_known_layer() -> None:
    stray = [m for m in MODULES if m.count(".") >= 1 and m.split(".")[1].startswith("_")]
    stray = [m for m in stray if m.split(".")[1] not in LAYERS and m != f"{NAME}.__main__"]
    assert stray == []


def test_no_import_cycle() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in GRAPH.get(node, []):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(GRAPH):
        if start not in state:
            visit(start, [start])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_run_down_the_layers() -> None:
    upward = [
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
        for m, targets in GRAPH.items()
        for t in targets
        if layer(t) > layer(m)
    ]
    assert upward == []


def test_no_layer_imports_the_package_itself() -> None:
    """``dask_reservoir/__init__.py`` imports the facade, so a layer importing it closes a cycle."""
    found = [
        f"{m}:{line} imports {target}{'.' + name if name else ''}"
        for m in MODULES
        if m != NAME and m.split(".")[1].startswith("_")
        for target, name, line in imports(m)
        if target == NAME and (name is None or f"{NAME}.{name}" not in MODULES)
    ]
    assert found == []


def test_no_import_of_another_modules_private_name() -> None:
    private = [
        f"{m}:{line} imports {name} from {target}"
        for m in MODULES
        for target, name, line in imports(m)
        if name and name.startswith("_") and name != "__version__" and internal(target)
    ]
    assert private == []


def test_the_pure_core_starts_no_thread_and_uses_no_dask_client() -> None:
    found = []
    for m, tree in TREES.items():
        if layer(m) > LAYERS["_core"]:
            continue
        found += [f"{m}:{line} imports {t}" for t, _, line in imports(m) if t.split(".")[0] in RUNTIME_ONLY]
        found += [
            f"{m}:{node.lineno} uses .{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in THREAD_STARTERS
        ]
    assert found == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES}): split it by concern"


def test_the_checks_see_a_cycle_and_a_private_import(tmp_path: Path) -> None:
    """The graph reader finds relative, lazy and TYPE_CHECKING imports."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from dask_reservoir.reservoir import AsyncReservoir\n"
        "def f():\n    from ..errors import _secret\n"
    )
    TREES["dask_reservoir._core.fake"] = tree
    MODULES["dask_reservoir._core.fake"] = tmp_path / "fake.py"
    try:
        found = imports("dask_reservoir._core.fake")
    finally:
        del TREES["dask_reservoir._core.fake"], MODULES["dask_reservoir._core.fake"]
    assert ("dask_reservoir.reservoir", "AsyncReservoir", 3) in found
    assert ("dask_reservoir.errors", "_secret", 5) in found
