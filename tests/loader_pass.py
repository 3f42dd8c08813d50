"""The loader pass of ``make test``: the tests that build a reservoir where ``loader="auto"`` puts a loader process.

``make test`` runs the suite, then again with ``DASK_DASK_RESERVOIR__LOADER=auto`` over the tests
whose reservoirs that setting changes: those built with ``loader`` not given (the dask config
decides) on a process, remote or embedded cluster, where "auto" puts a loader process.  Which
tests these are is not kept by hand: the first pass finds out, as the tests run.

Recording (a run without ``--loader-pass``, the config key not set):

- the library's own decision function, :func:`~dask_reservoir._runtime.loader.parent.choose_loader`,
  is wrapped: when a reservoir's ``loader`` is None and ``choose_loader("auto", ...)`` says
  "process", the running test is recorded;
- a Python child process that a test starts (not one the library starts, as its loader process)
  inherits the environment, so with ``DASK_DASK_RESERVOIR__LOADER=auto`` its reservoirs go
  through a loader process too: a test starting one is recorded, unless the child plainly builds
  none (``python -m dask`` cluster processes, ``-c`` code or scripts that never name
  dask_reservoir).

At the end of the session the record (the tests that ran, those recorded, and a digest of the
sources that decide it) is written to ``RECORD``, merged with a record of the same sources.

Selecting (``--loader-pass``): the collected tests are narrowed to those recorded.  Tests the
record does not know (no record, a record of other sources, tests that were not run when it was
written) are kept: the pass then runs more tests, never fewer.  The modules of ``EXEMPT`` are left
out, each for the reason it gives.  A clean clone running
``make test`` writes the record in the first pass and reads it in the second.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import dask.config
import pytest

RECORD = Path(".pytest_cache") / "dask_reservoir-loader-pass.json"
"""Where the first pass writes what it found (relative to the rootdir)."""

FORMAT = 1

SOURCES = (
    "dask_reservoir/**/*.py",
    "tests/**/*.py",
    "examples/**/*.py",
    "benchmarks/**/*.py",
    "notebooks/*.ipynb",
    "conftest.py",
)
"""What decides which tests build such reservoirs: a record of other sources is not trusted."""

CLUSTER_MODULES = ("dask", "distributed")
"""``python -m`` modules that start cluster processes (no reservoir in them)."""

EXEMPT = {
    "tests/test_bench_smoke.py": "the benchmark harness's smoke test (its loader='process' rows run in "
    "the first pass; under the setting it takes 90 s more, for no assertion about the loader)",
}
"""Test modules left out of the loader pass although they build such reservoirs, and why."""


def sources_digest(root: Path) -> str:
    """A digest of the files of ``SOURCES`` under ``root`` (their paths and contents)."""
    digest = hashlib.sha256()
    files = sorted({p for pattern in SOURCES for p in root.glob(pattern) if "__pycache__" not in p.parts})
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def may_build_reservoirs(argv: Sequence[str]) -> bool:
    """Whether a child process started with ``argv`` may build reservoirs (a Python that is not a cluster's).

    >>> may_build_reservoirs([sys.executable, "-m", "dask", "scheduler"])
    False
    >>> may_build_reservoirs([sys.executable, "-m", "dask_reservoir", "demo"])
    True
    >>> may_build_reservoirs([sys.executable, "-c", "print(1)"])
    False
    >>> may_build_reservoirs(["git", "status"])
    False
    """
    if not argv or not Path(str(argv[0])).name.startswith("python"):
        return False
    args = [str(a) for a in argv[1:]]
    while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
        args.pop(0)  # interpreter flags
    if not args:
        return False
    if args[0] in ("-m", "-c"):
        if len(args) < 2:
            return False
        if args[0] == "-m":
            return args[1].split(".")[0] not in CLUSTER_MODULES
        return "dask_reservoir" in args[1]
    script = Path(args[0])
    try:
        return "dask_reservoir" in script.read_text(errors="replace")
    except OSError:
        return True  # cannot tell: count it


def started_by_library(frame: FrameType | None) -> bool:
    """Whether the first caller outside ``subprocess`` is the dask_reservoir package (its loader process)."""
    while frame is not None and frame.f_globals.get("__name__", "").startswith("subprocess"):
        frame = frame.f_back
    return frame is not None and str(frame.f_globals.get("__name__", "")).startswith("dask_reservoir")


class LoaderPass:
    """Records, in a normal run, the tests whose reservoirs ``loader="auto"`` changes; selects them with ``--loader-pass``."""

    def __init__(self, config: pytest.Config) -> None:
        from dask_reservoir._runtime.loader.parent import CONFIG_KEY

        self.root = Path(str(config.rootpath))
        self.path = self.root / RECORD
        self.selecting = bool(config.getoption("loader_pass"))
        self.recording = not self.selecting and dask.config.get(CONFIG_KEY, None) is None
        self.config_key = CONFIG_KEY
        self.current: str | None = None
        self.ran: set[str] = set()
        self.recorded: set[str] = set()
        self.summary: list[str] = []
        self._undo: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ recording
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.recording:
            self._wrap_choose_loader()
            self._wrap_popen()

    def _wrap_choose_loader(self) -> None:
        import dask_reservoir._runtime.loader.parent as parent

        original = parent.choose_loader

        def choose_loader(loader: str | None, handle: Any, source: Any) -> tuple[str, str]:
            chosen = original(loader, handle, source)
            if (
                self.current is not None
                and loader is None
                and dask.config.get(self.config_key, None) is None  # not set by the test itself
                and original("auto", handle, source)[0] == "process"
            ):
                self.recorded.add(self.current)
            return chosen

        for module in [m for name, m in list(sys.modules.items()) if name.startswith("dask_reservoir")]:
            if getattr(module, "choose_loader", None) is original:
                module.choose_loader = choose_loader
                self._undo.append(lambda module=module: setattr(module, "choose_loader", original))

    def _wrap_popen(self) -> None:
        original = subprocess.Popen.__init__
        plugin = self

        def __init__(popen: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
            argv = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
            if (
                plugin.current is not None
                and not kwargs.get("shell")
                and may_build_reservoirs([os.fsdecode(a) for a in argv])
                and not started_by_library(sys._getframe(1))
            ):
                plugin.recorded.add(plugin.current)
            original(popen, args, *rest, **kwargs)

        subprocess.Popen.__init__ = __init__  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(subprocess.Popen, "__init__", original))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self.current = item.nodeid
        try:
            yield
        finally:
            self.current = None
            self.ran.add(item.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        if not self.recording or not self.ran:
            return
        digest = sources_digest(self.root)
        ran, recorded = set(self.ran), self.recorded & self.ran
        previous = self._read()
        if previous is not None and previous.get("digest") == digest:
            ran |= set(previous["ran"])  # the tests run now replace what was known of them
            recorded |= set(previous["selected"]) - self.ran
        record = {
            "format": FORMAT,
            "digest": digest,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "ran": sorted(ran),
            "selected": sorted(recorded),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        partial.write_text(json.dumps(record, indent=0))
        os.replace(partial, self.path)

    # ------------------------------------------------------------------ selecting
    def _read(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            return None
        return record

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not self.selecting:
            return
        record = self._read()
        if record is None:
            why, ran, selected = f"no record in {RECORD}", set(), set()
        elif record["digest"] != sources_digest(self.root):
            why, ran, selected = f"the record of {record['written']} is of other sources", set(), set()
        else:
            why, ran, selected = f"record of {record['written']}", set(record["ran"]), set(record["selected"])
        exempt = [i for i in items if i.nodeid.split("::")[0] in EXEMPT]
        unknown = [i for i in items if i.nodeid not in ran and i not in exempt]
        keep = [i for i in items if (i.nodeid in selected or i.nodeid not in ran) and i not in exempt]
        dropped = [i for i in items if i not in keep]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = keep
        self.summary = [
            f"loader pass: {len(keep) - len(unknown)} tests recorded as building a reservoir where "
            f"loader='auto' puts a loader process ({why})"
            + (f", and {len(unknown)} tests the record does not know (run to be safe)" if unknown else "")
        ]
        self.summary += [f"loader pass: not {module}: {why}" for module, why in EXEMPT.items()]

    def pytest_report_collectionfinish(self) -> list[str]:
        return self.summary
