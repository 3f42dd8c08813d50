"""The declared dependency range is the tested one: `make test-min` pins the declared lower bounds."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def lower_bounds() -> dict[str, str]:
    """``{name: minimum}`` of the runtime dependencies in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for line in project["dependencies"]:
        req = Requirement(line)
        (minimum,) = [s.version for s in req.specifier if s.operator == ">="]
        bounds[req.name] = minimum
    return bounds


def min_pins() -> dict[str, str]:
    """``{name: version}`` that the Makefile's MIN_PINS installs for `make test-min`."""
    line = next(x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith("MIN_PINS"))
    return {
        Requirement(pin).name: Requirement(pin).specifier.__str__().lstrip("=")
        for pin in re.findall(r'"([^"]+)"', line)
    }


def test_make_test_min_installs_the_declared_lower_bounds() -> None:
    bounds, pins = lower_bounds(), min_pins()
    assert set(bounds) == {"dask", "pandas", "numpy"}
    for name, minimum in bounds.items():
        assert pins[name] == minimum, (name, minimum, pins[name])  # the bound tested is the one declared
    assert pins["distributed"] == pins["dask"]  # released together, and a client needs both at one version
