"""Root pytest configuration: skip doctests of optional modules whose dependency is missing; the loader pass."""

from __future__ import annotations

import importlib.util

import pytest

collect_ignore: list[str] = []
if importlib.util.find_spec("torch") is None:
    collect_ignore += ["dask_reservoir/torch.py", "dask_reservoir/_core/tensors.py"]


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--loader-pass``."""
    parser.addoption(
        "--loader-pass",
        action="store_true",
        help="run only the tests that build a reservoir where loader='auto' puts a loader process, "
        "as the last run without this option recorded (tests/loader_pass.py); with "
        "DASK_DASK_RESERVOIR__LOADER=auto, the second pass of make test",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the loader pass: it records the tests to run with the loader, and selects them with ``--loader-pass``."""
    from tests.loader_pass import LoaderPass

    config.pluginmanager.register(LoaderPass(config), "dask-reservoir-loader-pass")
