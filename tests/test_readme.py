"""The README's promises table names tests that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def promised_tests() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Promises, and the tests that hold them")
    section = readme[start : readme.index("\n## ", start + 1)]
    named: list[tuple[str, str]] = []
    module = ""
    for match in re.finditer(r"`(test_\w+\.py)?(?:::(\w+))?`", section):
        module = match.group(1) or module
        if match.group(2):
            named.append((module, match.group(2)))
    return named


def test_every_test_the_promises_table_names_exists() -> None:
    named = promised_tests()
    assert len(named) >= 20, named
    missing = []
    for module, name in named:
        paths = sorted((ROOT / "tests").rglob(module))  # tests/ mirrors the package: tests/core/...
        if len(paths) != 1:
            missing.append(f"{module} ({len(paths)} files of that name under tests/)")
            continue
        tree = ast.parse(paths[0].read_text())
        functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        if name not in functions:
            missing.append(f"{module}::{name}")
    assert not missing, f"the README's promises table names tests that do not exist: {missing}"
